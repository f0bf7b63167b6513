"""The events table and its runs: recording an event once, with one run per registered handler,
and reading a recorded event back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.infra.crypto import PayloadCipher
from shared.infra.timeutil import utc_from_timestamp
from shared.ledger.event_rules import storable_event
from shared.ledger.handlers import HandlerRegistry
from shared.ledger.handlers import registry as default_registry
from shared.models import HandlerRun, RunStatus, StripeEvent

# The tables, not the mapped classes, for the hot path's inserts: plain statements, without
# the ORM's bulk machinery.
EVENTS_TABLE = cast(Table, StripeEvent.__table__)


RUNS_TABLE = cast(Table, HandlerRun.__table__)


class EventNotFound(LookupError):
    """Neither we nor Stripe have an event with that id."""


@dataclass(frozen=True)
class RecordedEvent:
    """An event as this call recorded it: what its runs need, without reading it back."""

    id: str
    type: str
    created: dt.datetime
    received_at: dt.datetime
    # As stored: the storable copy (no client secret, no NUL) that was encrypted.
    payload: dict[str, Any]
    # The handlers applied with the event's recording, in its transaction.
    handlers: list[str]
    # The handlers that run as tasks of their own (batch=False, or a queue of their own): their
    # runs are created pending, for the caller to enqueue once the event is committed.
    deferred: list[str] = field(default_factory=list)
    # The handlers that do not accept the event's API version: their runs are written held.
    held: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class IngestResult:
    event_id: str
    event_type: str
    newly_recorded: bool
    # Runs still pending after the commit; the caller enqueues one handler task for each.
    pending_handlers: list[str]
    # Runs this call created already claimed (one attempt counted, leased to the caller): the
    # caller applies them itself, at once (shared.ledger.runs.apply).
    claimed_handlers: list[str] = field(default_factory=list)
    recorded: RecordedEvent | None = None


def record_event(
    session: Session,
    event: dict[str, Any],
    source: str,
    cipher: PayloadCipher,
    *,
    claim_lease: dt.timedelta | None = None,
    registry: HandlerRegistry = default_registry,
) -> bool:
    """Insert the event unless it is known. Returns True when this call recorded it. With
    ``claim_lease``, its runs are created claimed by the caller: one attempt counted and
    leased for that long, as ``shared.ledger.runs.task`` claims a run before applying it."""
    return _record(session, event, source, cipher, registry, claim_lease) is not None


def _record(
    session: Session,
    event: dict[str, Any],
    source: str,
    cipher: PayloadCipher,
    registry: HandlerRegistry,
    claim_lease: dt.timedelta | None,
    uncounted_attempts: int = 0,
) -> RecordedEvent | None:
    recorded = insert_events(session, [(event, source)], cipher, registry).get(event["id"])
    if recorded is None or not (recorded.handlers or recorded.deferred or recorded.held):
        return recorded
    claimed = (
        {"attempts": 1 + uncounted_attempts, "leased_until": func.now() + claim_lease}
        if claim_lease
        else {}
    )
    # One statement for all of them (every row with the same columns); a run for a task of its
    # own, or held, is never claimed here.
    unclaimed = {"attempts": 0, "leased_until": None} if claim_lease else {}
    pending, held = RunStatus.PENDING, RunStatus.HELD
    rows = [
        {"event_id": recorded.id, "handler": name, "status": pending, **claimed}
        for name in recorded.handlers
    ]
    rows += [
        {"event_id": recorded.id, "handler": name, "status": pending, **unclaimed}
        for name in recorded.deferred
    ]
    rows += [
        {"event_id": recorded.id, "handler": name, "status": held, **unclaimed}
        for name in recorded.held
    ]
    session.execute(insert(RUNS_TABLE).values(rows))
    return recorded


_INSERT_NEW_EVENTS = (
    insert(EVENTS_TABLE)
    # Two deliveries of one event may race here: one waits for the other, and the loser sees
    # no row returned.
    .on_conflict_do_nothing(index_elements=[EVENTS_TABLE.c.id])
    .returning(EVENTS_TABLE.c.id, EVENTS_TABLE.c.received_at)
)


def insert_events(
    session: Session,
    events: Sequence[tuple[dict[str, Any], str]],
    cipher: PayloadCipher,
    registry: HandlerRegistry,
) -> dict[str, RecordedEvent]:
    """Insert every (event, source) not known yet; the ones inserted, by id. Their runs are the
    caller's."""
    rows, stored = [], []
    for event, source in events:
        row, copy = _event_row(event, source, cipher)
        rows.append(row)
        stored.append(copy)
    # Sent as one multi-row INSERT (SQLAlchemy's insertmanyvalues), compiled once per process.
    received = {row.id: row.received_at for row in session.execute(_INSERT_NEW_EVENTS, rows)}
    return {
        event["id"]: _recorded_event(event, copy, received[event["id"]], registry)
        for (event, _), copy in zip(events, stored, strict=True)
        if event["id"] in received
    }


def _event_row(
    event: dict[str, Any], source: str, cipher: PayloadCipher
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The values of an event's row, and the storable copy that was encrypted into it."""
    stored = storable_event(event)
    row = {
        "id": event["id"],
        "type": event["type"],
        "created": utc_from_timestamp(event["created"]),
        "livemode": bool(event.get("livemode", False)),
        "account": event.get("account"),
        "api_version": event.get("api_version"),
        "payload_encrypted": cipher.encrypt(stored),
        "source": source,
    }
    return row, stored


def _recorded_event(
    event: dict[str, Any], stored: dict[str, Any], at: dt.datetime, registry: HandlerRegistry
) -> RecordedEvent:
    names = sorted(registry.handlers_for(event["type"]))
    version = event.get("api_version")
    held = [name for name in names if not registry.policy_of(name).accepts(version)]
    runnable = [name for name in names if name not in held]
    inline = [name for name in runnable if registry.policy_of(name).in_batch]
    deferred = [name for name in runnable if name not in inline]
    created = utc_from_timestamp(event["created"])
    return RecordedEvent(event["id"], event["type"], created, at, stored, inline, deferred, held)


def pending_handlers(session: Session, event_id: str) -> list[str]:
    # A duplicate delivery still returns the runs left pending: if the process that recorded
    # the event died between its commit and its enqueue, this is what gets them going again.
    return pending_runs(session, [event_id]).get(event_id, [])


def pending_runs(session: Session, event_ids: Sequence[str]) -> dict[str, list[str]]:
    """The handlers of the runs still pending of these events, by event id, sorted by name."""
    if not event_ids:
        return {}
    pending: dict[str, list[str]] = {}
    for event_id, handler in session.execute(
        select(HandlerRun.event_id, HandlerRun.handler)
        .where(HandlerRun.event_id.in_(event_ids), HandlerRun.status == RunStatus.PENDING)
        .order_by(HandlerRun.event_id, HandlerRun.handler)
    ):
        pending.setdefault(event_id, []).append(handler)
    return pending


def stored_payload(event: StripeEvent, cipher: PayloadCipher) -> dict[str, Any]:
    """The event as recorded: decrypted, or plaintext for rows older than encryption."""
    if event.payload_encrypted is not None:
        return cipher.decrypt(event.payload_encrypted)
    assert event.payload is not None  # the payload_present check constraint
    return event.payload
