"""The handler registry: which handlers run for which Stripe event types.

A handler is a function ``(session, event) -> None`` that applies its effect inside the session's
transaction; the run is marked done in that same transaction, so the effect happens once. What
reaches outside the database goes through ``event.effects`` (shared.effects.outbox), committed
with the run and delivered after it. Its registered name is stored in ``handler_runs`` and must
stay stable across releases.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from typing import Any

from sqlalchemy.orm import Session
from stripe import Event, StripeObject

from shared.effects.outbox import Effects
from shared.infra.stripe_gateway import PaymentIntentReader
from shared.ledger.retry import RetryPolicy
from shared.validation import CALLER_METADATA_KEY


@dataclass(frozen=True)
class EventView:
    """What a handler sees of a recorded Stripe event."""

    id: str
    type: str
    created: Any  # datetime, timezone-aware
    payload: dict[str, Any]
    # Read access to Stripe's current objects, for handlers that must settle a tie; None where
    # the caller has no Stripe client (handlers then fall back to the event alone).
    stripe: PaymentIntentReader | None = None
    # Side effects, asked for in the handler's transaction and delivered once it commits; set
    # for each handler call (shared.ledger.runs.apply.call_handler).
    effects: Effects | None = None

    @property
    def object(self) -> dict[str, Any]:
        """The event's object, as the JSON Stripe sent."""
        obj: dict[str, Any] = self.payload["data"]["object"]
        return obj

    @property
    def stripe_object(self) -> StripeObject:
        """The event's object as the Stripe SDK builds it (``stripe.PaymentIntent``,
        ``stripe.Charge``...), with attribute access: ``event.stripe_object.amount``."""
        obj: StripeObject = Event.construct_from(self.payload, None).data.object
        return obj

    @property
    def account(self) -> str | None:
        """The connected account the event is about (Connect), or None for the platform's own."""
        account = self.payload.get("account")
        return account if isinstance(account, str) else None

    @property
    def livemode(self) -> bool:
        return bool(self.payload.get("livemode"))

    @property
    def api_version(self) -> str | None:
        version = self.payload.get("api_version")
        return version if isinstance(version, str) else None

    @property
    def payments_caller(self) -> str | None:
        """Who made the PaymentIntent this event is about, when this service made it:
        "client:<name>" (a back end's API key) or "session:<id>" (a browser paying a checkout
        session the back end priced). Read from Stripe's metadata, where the service puts it
        and no create-payment caller can."""
        metadata = self.object.get("metadata")
        value = metadata.get(CALLER_METADATA_KEY) if isinstance(metadata, dict) else None
        return value if isinstance(value, str) else None


Handler = Callable[[Session, EventView], None]


@dataclass(frozen=True)
class HandlerPolicy:
    """How one handler runs, where it differs from the service's defaults.

    ``queue``: None runs it on the ledger's handlers queue; a queue name runs it on that queue,
    for a worker of its own to take (a slow handler then never holds up the ledger's).
    ``batch``: True (the default, and only without a queue of its own) applies it in the
    transaction that records its event, with the rest of the batch (the fastest path, where a
    handler that takes 30 s holds up every event of its batch); False runs it as a task of its
    own once the event is committed. ``max_attempts``, ``retry_base_seconds`` and
    ``time_limit_seconds`` replace HANDLER_MAX_ATTEMPTS, RETRY_BASE_SECONDS and
    HANDLER_TIME_LIMIT_SECONDS for it (a time limit only where it runs as a task of its own:
    the batch's handlers share their transaction's)."""

    queue: str | None = None
    max_attempts: int | None = None
    time_limit_seconds: int | None = None
    retry_base_seconds: float | None = None
    batch: bool = True
    # The Stripe API versions whose payloads it reads; None: it reads only what every version
    # keeps, and takes any. An event of another version is held for it (RunStatus.HELD).
    api_versions: tuple[str, ...] | None = None

    @property
    def in_batch(self) -> bool:
        return self.batch and self.queue is None

    def accepts(self, api_version: str | None) -> bool:
        return self.api_versions is None or api_version in self.api_versions


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._by_type: dict[str, list[str]] = defaultdict(list)
        self._policies: dict[str, HandlerPolicy] = {}

    def handles(
        self,
        *event_types: str,
        name: str,
        queue: str | None = None,
        max_attempts: int | None = None,
        time_limit_seconds: int | None = None,
        retry_base_seconds: float | None = None,
        batch: bool = True,
        api_versions: tuple[str, ...] | None = None,
    ) -> Callable[[Handler], Handler]:
        if not event_types:
            raise ValueError("a handler must name at least one event type")
        policy = HandlerPolicy(
            queue, max_attempts, time_limit_seconds, retry_base_seconds, batch, api_versions
        )
        if time_limit_seconds is not None and policy.in_batch:
            raise ValueError(f"{name}: a time limit of its own needs batch=False or a queue")

        def register(func: Handler) -> Handler:
            if name in self._handlers and self._handlers[name] is not func:
                raise ValueError(f"handler name {name!r} is already registered")
            self._handlers[name] = func
            self._policies[name] = policy
            for event_type in event_types:
                if name not in self._by_type[event_type]:
                    self._by_type[event_type].append(name)
            return func

        return register

    def handlers_for(self, event_type: str) -> list[str]:
        return list(self._by_type.get(event_type, ()))

    def policy_of(self, name: str) -> HandlerPolicy:
        """A handler's own policy; the defaults for a name this release does not have."""
        return self._policies.get(name, HandlerPolicy())

    def retry_policy(self, name: str, default: RetryPolicy) -> RetryPolicy:
        """The service's retry policy with this handler's own attempts and time limit."""
        policy = self.policy_of(name)
        return default.overridden(
            policy.max_attempts, policy.time_limit_seconds, policy.retry_base_seconds
        )

    def queues(self) -> set[str]:
        """The queues handlers of their own were given (each needs a worker consuming it)."""
        return {policy.queue for policy in self._policies.values() if policy.queue}

    def event_types(self) -> list[str]:
        """Every event type some handler needs: what Stripe must send us, no more."""
        return sorted(event_type for event_type, names in self._by_type.items() if names)

    def get(self, name: str) -> Handler:
        try:
            return self._handlers[name]
        except KeyError:
            raise UnknownHandler(name) from None

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def describe(self) -> list[HandlerInfo]:
        """Each handler: its name, the event types it runs for and where its code is."""
        types: dict[str, list[str]] = defaultdict(list)
        for event_type, names in self._by_type.items():
            for name in names:
                types[name].append(event_type)
        return [
            HandlerInfo(
                name, sorted(types[name]), _source(self._handlers[name]), self.policy_of(name)
            )
            for name in self.names()
        ]


@dataclass(frozen=True)
class HandlerInfo:
    name: str
    event_types: list[str]
    # The handler's module, and the installed distribution it comes from when there is one.
    source: str
    policy: HandlerPolicy


def _source(func: Handler) -> str:
    module = getattr(func, "__module__", "?")
    top = module.split(".")[0]
    distributions = packages_distributions().get(top, [])
    return f"{module} ({distributions[0]})" if distributions else module


class UnknownHandler(LookupError):
    """A run names a handler this release does not have (renamed or removed)."""


registry = HandlerRegistry()
