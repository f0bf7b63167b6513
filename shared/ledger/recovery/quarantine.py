"""Undecryptable queue bodies kept for an operator, and their recovery once a key reads them."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.infra.crypto import PayloadCipher
from shared.infra.timeutil import utc_from_timestamp
from shared.ledger.event_rows import pending_handlers, record_event
from shared.ledger.event_rules import EventRefused, EventScope
from shared.ledger.handlers import HandlerRegistry
from shared.ledger.handlers import registry as default_registry
from shared.ledger.ingest.queue_bodies import UndecryptableBody, queued_event
from shared.models import QuarantinedEvent


def quarantine(
    sessions: sessionmaker[Session],
    body: str,
    source: str,
    *,
    attempts: int,
    first_attempt_at: float,
) -> bool:
    """Keep an undecryptable body for an operator. True when this call stored it."""
    with transaction(sessions) as session:
        stored = session.execute(
            insert(QuarantinedEvent)
            .values(
                body=body,
                body_sha256=hashlib.sha256(body.encode()).hexdigest(),
                source=source,
                attempts=attempts,
                first_attempt_at=utc_from_timestamp(first_attempt_at),
            )
            .on_conflict_do_nothing(index_elements=[QuarantinedEvent.body_sha256])
            .returning(QuarantinedEvent.id)
        ).scalar_one_or_none()
    return stored is not None


def undecryptable_countdown(
    first_attempt_at: float, now: float, bound_seconds: int, backoff: float
) -> float | None:
    """Seconds until the next attempt at an undecryptable body, or None once it has been
    retried for ``bound_seconds`` (quarantine it). The last attempt falls on the bound."""
    remaining = first_attempt_at + bound_seconds - now
    if remaining <= 0:
        return None
    return min(max(1.0, backoff), remaining)


@dataclass(frozen=True)
class Recovery:
    quarantine_id: int
    # "recovered", "undecryptable", or the refusal reason.
    outcome: str
    event_id: str | None = None
    pending_handlers: tuple[str, ...] = ()


def list_quarantined(
    sessions: sessionmaker[Session], *, include_recovered: bool = False
) -> list[QuarantinedEvent]:
    query = select(QuarantinedEvent).order_by(QuarantinedEvent.id)
    if not include_recovered:
        query = query.where(QuarantinedEvent.recovered_at.is_(None))
    with sessions() as session:
        return list(session.execute(query).scalars())


def recover_quarantined(
    sessions: sessionmaker[Session],
    ids: Sequence[int] | None,
    cipher: PayloadCipher,
    scope: EventScope,
    *,
    registry: HandlerRegistry = default_registry,
) -> list[Recovery]:
    """Ingest quarantined bodies that the configured keys now decrypt (``ids``, or every one
    not yet recovered), through the same checks as the queue. The caller enqueues the runs."""
    query = select(QuarantinedEvent.id).where(QuarantinedEvent.recovered_at.is_(None))
    if ids is not None:
        query = query.where(QuarantinedEvent.id.in_(ids))
    with sessions() as session:
        chosen = list(session.execute(query.order_by(QuarantinedEvent.id)).scalars())
    return [_recover_one(sessions, row_id, cipher, scope, registry) for row_id in chosen]


def _recover_one(
    sessions: sessionmaker[Session],
    row_id: int,
    cipher: PayloadCipher,
    scope: EventScope,
    registry: HandlerRegistry,
) -> Recovery:
    with transaction(sessions) as session:
        row = session.get(QuarantinedEvent, row_id, with_for_update=True)
        if row is None or row.recovered_at is not None:
            return Recovery(row_id, "recovered")
        try:
            event = scope.check(queued_event(row.body, cipher))
        except UndecryptableBody:
            return Recovery(row_id, "undecryptable")
        except EventRefused as exc:
            return Recovery(row_id, exc.code, exc.event_id)
        record_event(session, event, row.source, cipher, registry=registry)
        row.recovered_at = dt.datetime.now(dt.UTC)
        row.recovered_event_id = event["id"]
        pending = pending_handlers(session, event["id"])
    return Recovery(row_id, "recovered", event["id"], tuple(pending))
