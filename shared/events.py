"""Recording Stripe events once and creating one run per registered handler."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import InvalidToken
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import PayloadCipher
from shared.db import transaction
from shared.handlers import registry
from shared.models import HandlerRun, StripeEvent
from shared.webhooks import WebhookRejected, check_event, parse_event_body, storable_event


class EventNotFound(LookupError):
    """Neither we nor Stripe have an event with that id."""


@dataclass(frozen=True)
class IngestResult:
    event_id: str
    event_type: str
    newly_recorded: bool
    # Runs still pending after the commit; the caller enqueues one handler task for each.
    pending_handlers: list[str]


def record_event(
    session: Session, event: dict[str, Any], source: str, cipher: PayloadCipher
) -> bool:
    """Insert the event unless it is known. Returns True when this call recorded it."""
    inserted = session.execute(
        insert(StripeEvent)
        .values(
            id=event["id"],
            type=event["type"],
            created=dt.datetime.fromtimestamp(event["created"], tz=dt.UTC),
            livemode=bool(event.get("livemode", False)),
            account=event.get("account"),
            api_version=event.get("api_version"),
            payload_encrypted=cipher.encrypt(storable_event(event)),
            source=source,
        )
        # Two deliveries of one event may race here; the loser sees no row returned.
        .on_conflict_do_nothing(index_elements=[StripeEvent.id])
        .returning(StripeEvent.id)
    ).scalar_one_or_none()
    if inserted is None:
        return False
    for handler in registry.handlers_for(event["type"]):
        session.add(HandlerRun(event_id=event["id"], handler=handler, status="pending"))
    return True


def ingest(
    sessions: sessionmaker[Session], body: str, source: str, cipher: PayloadCipher
) -> IngestResult:
    event = queued_event(body, cipher)
    with transaction(sessions) as session:
        newly_recorded = record_event(session, event, source, cipher)
        # A duplicate delivery still returns the runs left pending: if the process that recorded
        # the event died between its commit and its enqueue, this is what gets them going again.
        pending = list(
            session.execute(
                select(HandlerRun.handler)
                .where(HandlerRun.event_id == event["id"], HandlerRun.status == "pending")
                .order_by(HandlerRun.handler)
            ).scalars()
        )
    return IngestResult(event["id"], event["type"], newly_recorded, pending)


def queued_event(body: str, cipher: PayloadCipher) -> dict[str, Any]:
    """A queued event, checked: the receiver queues Fernet tokens; plain JSON is still read
    for messages queued before encryption (and by tools that enqueue raw events)."""
    if body.lstrip().startswith("{"):
        return parse_event_body(body)
    try:
        return check_event(cipher.decrypt(body))
    except InvalidToken:
        raise WebhookRejected("invalid_event", "queued event cannot be decrypted") from None


def stored_payload(event: StripeEvent, cipher: PayloadCipher) -> dict[str, Any]:
    """The event as recorded: decrypted, or plaintext for rows older than encryption."""
    if event.payload_encrypted is not None:
        return cipher.decrypt(event.payload_encrypted)
    assert event.payload is not None  # the payload_present check constraint
    return event.payload
