"""What an event must be to be recorded: a Stripe event of the expected shape, in this
deployment's scope, stored without what must not be kept. The web process checks a delivery with
these rules before it answers Stripe; the worker checks the queued body with the same rules again,
as the one that guards the ledger.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.config import Settings


class WebhookRejected(Exception):
    """The delivery is not a genuine, fresh Stripe event. ``code`` is safe to return."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


LIVEMODE_MISMATCH = "livemode_mismatch"


ACCOUNT_NOT_SERVED = "account_not_served"


class EventRefused(WebhookRejected):
    """A genuine Stripe event we must not apply: of the other mode, or of a connected account
    we do not serve. ``acknowledge``: answer Stripe 2xx anyway, as retrying cannot change it."""

    def __init__(
        self, code: str, message: str, event: dict[str, Any], *, acknowledge: bool = False
    ) -> None:
        super().__init__(code, message)
        self.event_id: str | None = event.get("id")
        self.event_type = str(event.get("type", "unknown"))
        self.acknowledge = acknowledge


@dataclass(frozen=True)
class EventScope:
    """Which events this deployment applies: the policy, in one place, for the receiver, the
    worker's ingest, the reconciler and replay alike."""

    # The mode of our secret key: a test event must never move a live ledger, nor the reverse.
    livemode: bool
    # Connected accounts we serve; an event without ``account`` is the platform's own.
    connected_accounts: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> EventScope:
        return cls(settings.livemode, settings.connected_accounts)

    def refusal(self, event: dict[str, Any]) -> EventRefused | None:
        # Stripe always sends livemode; one without it is not live.
        if bool(event.get("livemode", False)) != self.livemode:
            return EventRefused(
                LIVEMODE_MISMATCH,
                "event livemode does not match the secret key's mode",
                event,
                # A misconfiguration (an endpoint of the other mode pointing here): failing
                # deliveries show in Stripe's dashboard, where an operator sees them.
                acknowledge=False,
            )
        account = event.get("account")
        if account is not None and account not in self.connected_accounts:
            # Stripe would retry a refusal for days; it cannot become servable by retrying.
            return EventRefused(
                ACCOUNT_NOT_SERVED, "event of an account we do not serve", event, acknowledge=True
            )
        return None

    def check(self, event: dict[str, Any]) -> dict[str, Any]:
        """Return ``event`` if we apply it; raise EventRefused if not."""
        refused = self.refusal(event)
        if refused is not None:
            raise refused
        return event


# Fields that Stripe includes in event objects but that must never be stored: a PaymentIntent's
# client secret lets whoever holds it confirm the payment from a browser.
SECRET_OBJECT_FIELDS = ("client_secret",)


def _without_nul(value: Any) -> Any:
    # PostgreSQL text and JSONB cannot hold U+0000; Stripe passes through whatever a customer
    # typed into a metadata value or a name. Replace it rather than fail the event for ever.
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


def storable_event(event: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``event`` fit to queue and store: no secrets in ``data.object`` or
    ``data.previous_attributes``, no NUL characters."""
    data = dict(event.get("data") or {})
    for part in ("object", "previous_attributes"):
        section = data.get(part)
        if isinstance(section, dict) and any(f in section for f in SECRET_OBJECT_FIELDS):
            data[part] = {k: v for k, v in section.items() if k not in SECRET_OBJECT_FIELDS}
    cleaned: dict[str, Any] = {**event, "data": data}
    return _without_nul(cleaned) if _may_hold_nul(cleaned) else cleaned


def _may_hold_nul(value: Any) -> bool:
    # json.dumps runs in C and writes U+0000 as \u0000: checking its text is far cheaper than
    # walking every value in Python, which only an event that may hold one then pays for.
    return "\\u0000" in json.dumps(value, default=str)


# The object each family of event types carries, for the families our own handlers read. A
# signed event whose object is of another kind is refused, not handed to a handler that would
# misread it (a refund's amount taken for a payment's). Longest prefix first.
_EVENT_OBJECTS = (
    ("charge.dispute.", "dispute"),
    ("charge.refund.", "refund"),
    ("charge.", "charge"),
    ("payment_intent.", "payment_intent"),
    ("refund.", "refund"),
)


def expected_object(event_type: str) -> str | None:
    for prefix, object_type in _EVENT_OBJECTS:
        if event_type.startswith(prefix):
            return object_type
    return None


def check_event(event: Any) -> dict[str, Any]:
    """Check that a decoded body is a Stripe event we can record."""
    if not isinstance(event, dict) or event.get("object") not in (None, "event"):
        raise WebhookRejected("invalid_event", "body is not a Stripe event")
    event_id, event_type = event.get("id"), event.get("type")
    data = event.get("data")
    if not isinstance(event_id, str) or not event_id.startswith("evt_"):
        raise WebhookRejected("invalid_event", "event id is missing or malformed")
    if not isinstance(event_type, str) or not event_type:
        raise WebhookRejected("invalid_event", "event type is missing")
    created = event.get("created")
    if isinstance(created, bool) or not isinstance(created, int):
        raise WebhookRejected("invalid_event", "event created is missing")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise WebhookRejected("invalid_event", "event data.object is missing")
    expected = expected_object(event_type)
    if expected is not None and data["object"].get("object") != expected:
        raise WebhookRejected(
            "invalid_event", f"a {event_type} event must carry a {expected} object"
        )
    return event
