"""Queued bodies as events: a body authenticated and decoded, and the messages a worker holds as
the events one batch ingests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import InvalidToken

from shared.infra.crypto import PayloadCipher
from shared.ledger.event_rules import EventRefused, EventScope, check_event
from shared.ledger.thin_events import FetchRelated, expand_queued

# The refusal reason of a queue body that is not a token at all (plain JSON).
UNSIGNED = "unsigned"


class UndecryptableBody(Exception):
    """No configured key decrypts a queued body: encrypted under a key the web process has and
    the workers do not have yet, or forged. Only time (the deploy finishing) tells them apart."""


def queued_event(body: str, cipher: PayloadCipher) -> dict[str, Any]:
    """A queued event, authenticated and checked. Fernet is authenticated encryption: a token
    that decrypts under one of our keys was made by a holder of that key, so it is our
    signature on the queue. Anything else (plain JSON, a token under another key) anyone who
    reaches Redis could have written: it is never read as an event."""
    try:
        return check_event(cipher.decrypt(body))
    except InvalidToken:
        if body.lstrip().startswith("{"):
            # It can never become readable: refuse it at once, without parsing what it says.
            raise EventRefused(
                UNSIGNED, "plain queue body refused: only encrypted events are ingested", {}
            ) from None
        raise UndecryptableBody() from None


@dataclass(frozen=True)
class QueuedDelivery:
    """One message of the events queue: ``key`` names it to the caller (the task id)."""

    key: str
    body: str
    source: str


def queued_deliveries(
    items: Iterable[tuple[str, list[Any], dict[str, Any]]],
) -> tuple[list[QueuedDelivery], list[str]]:
    """(task id, args, kwargs) of queued ingest tasks as deliveries, and the ids of those whose
    arguments are not an ingest's (the task itself then says what is wrong)."""
    deliveries, alone = [], []
    for key, args, kwargs in items:
        try:
            body, source = _ingest_arguments(*args, **kwargs)
        except TypeError:
            alone.append(key)
            continue
        deliveries.append(QueuedDelivery(key, body, source))
    return deliveries, alone


def _ingest_arguments(
    body: str, source: str = "webhook", first_attempt_at: float | None = None
) -> tuple[str, str]:
    # ingest_event's signature; first_attempt_at matters only to a body no key decrypts.
    if not isinstance(body, str) or not isinstance(source, str):
        raise TypeError("an event body and its source are strings")
    return body, source


@dataclass
class QueuedEvent:
    """An event and the keys of every delivery of it in the batch (the first one's source is
    recorded; another is a duplicate)."""

    event: dict[str, Any]
    source: str
    keys: list[str]

    @property
    def id(self) -> str:
        return str(self.event["id"])


def decode_batch(
    deliveries: Iterable[QueuedDelivery], cipher: PayloadCipher, scope: EventScope
) -> tuple[list[QueuedEvent], list[str]]:
    """The batch's events, one per event id, in the order their locks are taken; and the keys
    of the deliveries that did not decode (refused, retried or quarantined by their task)."""
    events: dict[str, QueuedEvent] = {}
    alone: list[str] = []
    for delivery in deliveries:
        try:
            event = scope.check(queued_event(delivery.body, cipher))
        except Exception:  # noqa: BLE001 - the task's own path says what is wrong
            alone.append(delivery.key)
            continue
        events.setdefault(event["id"], QueuedEvent(event, delivery.source, [])).keys.append(
            delivery.key
        )
    return sorted(events.values(), key=_lock_order), alone


def _lock_order(event: QueuedEvent) -> tuple[str, int, str]:
    """Batches on two workers take their row locks in one order (an event's object first: its
    handlers lock that object's rows), so one waits for the other instead of deadlocking; an
    object's events keep the order they happened in."""
    obj = event.event.get("data", {}).get("object", {})
    object_id = obj.get("id") if isinstance(obj, dict) else None
    return (str(object_id or ""), int(event.event.get("created") or 0), event.id)


def expand_thin_deliveries(
    deliveries: Iterable[QueuedDelivery], cipher: PayloadCipher, fetch: FetchRelated, version: str
) -> tuple[list[QueuedDelivery], list[str]]:
    """The deliveries with every thin event's related object fetched (shared.ledger.thin_events),
    and the keys of those whose fetch failed: they run alone, where the retry policy decides."""
    expanded, failed = [], []
    for delivery in deliveries:
        try:
            body = expand_queued(delivery.body, cipher, fetch, version)
        except Exception:  # noqa: BLE001 - the task's own path says what is wrong
            failed.append(delivery.key)
            continue
        expanded.append(QueuedDelivery(delivery.key, body, delivery.source))
    return expanded, failed
