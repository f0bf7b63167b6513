"""First deliveries: record events and apply their handlers in one transaction, many at once.

A message the broker has not delivered before is ingested here, alone (``ingest_first_delivery``,
the task's path) or with the others a worker holds (``ingest_batch``, through
shared.infra.task_batches). One transaction records every new event (one INSERT), applies each
handler of each event, writes every run with its outcome (one statement) and commits once, so
a transaction's fixed cost is paid once per batch. Every promise holds per event: one row per
(event, handler), each effect committed with its run's outcome, attempts matching calls.

The transaction's first handler call runs without a savepoint (two round trips fewer): should
it fail, the whole transaction is rolled back, nothing of it visible to anyone, and done again
with that failure noted on its run, the handler not called again. Every other handler runs in
a savepoint of its own, so its failure is rolled back alone and counted on its run; no handler
is called twice for one attempt.

Only for messages the broker has not delivered before: should a handler kill its worker here,
nothing commits, not even the attempt, and the broker redelivers every message of the batch
marked as such; each redelivery goes alone through ``ingest`` then ``apply_claimed_runs``, which
commit the claimed attempt first, so such a handler still ends dead instead of looping.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.infra.crypto import PayloadCipher
from shared.infra.stripe_gateway import PaymentIntentReader
from shared.ledger.event_rows import IngestResult, RecordedEvent, insert_events, pending_runs
from shared.ledger.event_rules import EventScope
from shared.ledger.handlers import HandlerRegistry
from shared.ledger.handlers import registry as default_registry
from shared.ledger.ingest.queue_bodies import (
    QueuedDelivery,
    QueuedEvent,
    decode_batch,
    queued_event,
)
from shared.ledger.retry import Retry, RetryPolicy
from shared.ledger.runs.apply import HandlerFailed, apply_new_runs
from shared.ledger.runs.reporting import RunsOutcome, report_outcome
from shared.ledger.runs.rows import INSERT_RUN_OUTCOMES, outcome_row, pending_row
from shared.ledger.statement_limits import limit_statements
from shared.models import RunStatus
from shared.observability.logs import bound

log = logging.getLogger(__name__)


@dataclass
class Settled:
    """A delivery committed: what the task would have returned for it."""

    result: IngestResult
    # Handler -> when to run it again as a task of its own.
    retries: dict[str, Retry] = field(default_factory=dict)


@dataclass
class BatchResult:
    settled: dict[str, Settled] = field(default_factory=dict)
    # Keys of deliveries to run as ordinary tasks: their retry policy, refusals and
    # quarantine decide (a body that does not decode, a transaction that failed).
    alone: list[str] = field(default_factory=list)


@dataclass
class _Applied:
    recorded: RecordedEvent | None
    outcome: RunsOutcome
    # Runs pending after the commit, for the caller to start: a known event's still pending, or
    # a new event's handlers that have a queue of their own.
    pending: list[str]


def ingest_first_delivery(
    sessions: sessionmaker[Session],
    body: str,
    source: str,
    cipher: PayloadCipher,
    scope: EventScope,
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
    *,
    registry: HandlerRegistry = default_registry,
) -> tuple[IngestResult, RunsOutcome]:
    """One first delivery, as its task runs it. Raises as ``ingest`` does."""
    event = scope.check(queued_event(body, cipher))
    recorded, outcome, pending = record_and_apply(
        sessions, event, source, cipher, stripe, policy, registry=registry
    )
    return IngestResult(event["id"], event["type"], recorded is not None, pending), outcome


def record_and_apply(
    sessions: sessionmaker[Session],
    event: dict[str, Any],
    source: str,
    cipher: PayloadCipher,
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
    *,
    registry: HandlerRegistry = default_registry,
) -> tuple[RecordedEvent | None, RunsOutcome, list[str]]:
    """Record one event and apply its handlers; (None, nothing done, the runs still pending)
    when the event was known already."""
    queued = [QueuedEvent(event, source, [])]
    applied = _record_and_apply(queued, cipher, sessions, stripe, policy, registry)
    one = applied[event["id"]]
    return one.recorded, one.outcome, one.pending


def ingest_batch(
    sessions: sessionmaker[Session],
    deliveries: Iterable[QueuedDelivery],
    cipher: PayloadCipher,
    scope: EventScope,
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
    deadline: float | None = None,
    *,
    registry: HandlerRegistry = default_registry,
) -> BatchResult:
    """Record and apply first deliveries together. Never raises for one delivery's sake. Past
    ``deadline`` (time.monotonic()), no transaction starts: what is left runs alone, each
    under a time limit of its own, rather than the batch meeting its own."""
    events, alone = decode_batch(deliveries, cipher, scope)
    result = BatchResult(alone=alone)
    for chunk in transactions_of(events, registry):
        if deadline is not None and time.monotonic() > deadline:
            result.alone.extend(key for event in chunk for key in event.keys)
            continue
        try:
            applied = _record_and_apply(chunk, cipher, sessions, stripe, policy, registry)
        except Exception:
            log.warning(
                "a batch of %d event(s) failed; running each as a task", len(chunk), exc_info=True
            )
            result.alone.extend(key for event in chunk for key in event.keys)
            continue
        for event in chunk:
            _settle(event, applied[event.id], result)
    return result


def _settle(event: QueuedEvent, applied: _Applied, result: BatchResult) -> None:
    first, *duplicates = event.keys
    ingested = IngestResult(
        event.id, event.event["type"], applied.recorded is not None, applied.pending
    )
    result.settled[first] = Settled(ingested, applied.outcome.retries)
    for key in duplicates:
        # Another delivery of the same event: nothing left for it to start.
        result.settled[key] = Settled(IngestResult(event.id, ingested.event_type, False, []))


def _record_and_apply(
    events: list[QueuedEvent],
    cipher: PayloadCipher,
    sessions: sessionmaker[Session],
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
    registry: HandlerRegistry,
) -> dict[str, _Applied]:
    try:
        return _one_try(events, cipher, sessions, stripe, policy, registry, None)
    except HandlerFailed as failure:
        return _one_try(events, cipher, sessions, stripe, policy, registry, failure)


def _one_try(
    events: list[QueuedEvent],
    cipher: PayloadCipher,
    sessions: sessionmaker[Session],
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
    registry: HandlerRegistry,
    failure: HandlerFailed | None,
) -> dict[str, _Applied]:
    """One transaction for every event; ``failure`` is the first handler call's from the try
    before, if it failed (every handler is isolated then)."""
    applied: dict[str, _Applied] = {}
    with transaction(sessions) as session:
        limit_statements(session, dt.timedelta(seconds=policy.lease_seconds))
        recorded = insert_events(session, [(e.event, e.source) for e in events], cipher, registry)
        # As for any duplicate delivery, the runs still pending of events known before are what
        # gets an event going again should the process that recorded it have died before its
        # enqueue.
        pending = pending_runs(session, [e.id for e in events if e.id not in recorded])
        rows: list[dict[str, Any]] = []
        for event in events:
            new = recorded.get(event.id)
            if new is None:
                applied[event.id] = _Applied(None, RunsOutcome(), pending.get(event.id, []))
                continue
            isolate = failure is not None or bool(rows)
            with bound(**_log_ids(event)):
                outcome, runs = apply_new_runs(
                    session, new, stripe, policy, registry, failure, isolate
                )
            rows.extend(outcome_row(run, outcome) for run in runs)
            rows.extend(pending_row(event.id, name) for name in new.deferred)
            rows.extend(pending_row(event.id, name, RunStatus.HELD) for name in new.held)
            applied[event.id] = _Applied(new, outcome, list(new.deferred))
        if rows:
            session.execute(INSERT_RUN_OUTCOMES, rows)
    for event in events:
        one = applied[event.id]
        if one.recorded is not None:
            with bound(**_log_ids(event)):
                _report(one.outcome, one.recorded)
    return applied


def _report(outcome: RunsOutcome, event: RecordedEvent) -> None:
    # After the commit: a metrics or Sentry failure must not send committed events round again.
    try:
        report_outcome(outcome, event.id, event.type, event.received_at)
    except Exception:
        log.exception("could not report the outcome of %s", event.id)


def _log_ids(event: QueuedEvent) -> dict[str, str]:
    # A batch's handler lines name their task; a task's own are named already.
    return {"event_id": event.id, **({"task_id": event.keys[0]} if event.keys else {})}


# Savepoints (handler calls) one transaction may open; PostgreSQL caches 64 subtransactions.
MAX_SAVEPOINTS = 60


def transactions_of(
    events: list[QueuedEvent], registry: HandlerRegistry
) -> Iterator[list[QueuedEvent]]:
    """The batch cut so that no transaction opens more than MAX_SAVEPOINTS savepoints. Past
    64 subtransactions that wrote, PostgreSQL's snapshot of this transaction overflows its
    cache, and every other session's visibility checks go through pg_subtrans until it ends."""
    chunk: list[QueuedEvent] = []
    handlers = 0
    for event in events:
        count = len(registry.handlers_for(event.event["type"]))
        if chunk and handlers + count > MAX_SAVEPOINTS:
            yield chunk
            chunk, handlers = [], 0
        chunk.append(event)
        handlers += count
    if chunk:
        yield chunk
