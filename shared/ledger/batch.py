"""Applying the runs an ingest just claimed: one transaction, one savepoint per handler.

The ingest task records an event and creates its runs already claimed (shared.ledger.events),
then applies them here at once instead of sending one task per handler. Each handler's
effect and its done mark commit together, inside a savepoint of its own: a handler that
fails is rolled back to its savepoint alone, its failure counted on its run, and the others
commit. So an event costs two transactions and one task where a task per handler cost three
of each; a failed run is retried on its own, as a handler task (shared.ledger.runs). Every
promise of a handler run holds: one row per (event, handler), effect and done mark in one
commit, attempts counted, and the run rows locked for the whole transaction, so a second
delivery that takes a run over once its lease ends waits for this commit and then finds it
done.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.infra.crypto import PayloadCipher
from shared.infra.errors import is_transient
from shared.infra.stripe_gateway import PaymentIntentReader
from shared.ledger.events import (
    RUNS_TABLE,
    IngestResult,
    RecordedEvent,
    insert_event,
    pending_handlers,
    queued_event,
)
from shared.ledger.handlers import EventView, registry
from shared.ledger.retry import Retry, RetryPolicy
from shared.ledger.run_rows import (
    error_text,
    limit_statements,
    lock_runs,
    mark_done,
    mark_done_statement,
    note_failure,
)
from shared.ledger.webhooks import EventScope
from shared.models import HandlerRun, RunStatus
from shared.observability.metrics import EVENT_PROCESSING, HANDLER_RUNS
from shared.observability.sentry import report_dead_letter

log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    done: list[str] = field(default_factory=list)
    # Handler -> when to run it again as a task of its own.
    retries: dict[str, Retry] = field(default_factory=dict)
    dead: list[tuple[str, BaseException]] = field(default_factory=list)


def ingest_first_delivery(
    sessions: sessionmaker[Session],
    body: str,
    source: str,
    cipher: PayloadCipher,
    scope: EventScope,
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
) -> tuple[IngestResult, BatchOutcome]:
    """``ingest`` for a message the broker has not delivered before, with the event's runs
    applied in the same transaction (``record_and_apply``). Raises as ``ingest`` does."""
    event = scope.check(queued_event(body, cipher))
    recorded, outcome, pending = record_and_apply(sessions, event, source, cipher, stripe, policy)
    result = IngestResult(event["id"], event["type"], recorded is not None, pending)
    return result, outcome


def record_and_apply(
    sessions: sessionmaker[Session],
    event: dict[str, Any],
    source: str,
    cipher: PayloadCipher,
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
) -> tuple[RecordedEvent | None, BatchOutcome, list[str]]:
    """A first delivery: record the event, apply every handler (a savepoint each) and write
    its runs with their outcome, all in one transaction. When the event was known already,
    (None, nothing done, the runs still pending) instead.

    Only for a message the broker has not delivered before: should a handler kill its worker
    here, nothing commits, not even the attempt, and the broker redelivers the message marked
    as such; the redelivery takes ``ingest`` then ``apply_claimed_runs``, which commit the
    claimed attempt first, so such a handler still ends dead instead of looping."""
    outcome = BatchOutcome()
    with transaction(sessions) as session:
        limit_statements(session, dt.timedelta(seconds=policy.lease_seconds))
        recorded = insert_event(session, event, source, cipher)
        if recorded is None:
            return None, outcome, pending_handlers(session, event["id"])
        # The runs are written last, with their outcome, in one statement.
        runs = [HandlerRun(event_id=recorded.id, handler=h, attempts=1) for h in recorded.handlers]
        for run in runs:
            _apply_one(session, recorded, run, stripe, policy, outcome)
            if run.handler in outcome.done:
                mark_done(run)
        if runs:
            session.execute(insert(RUNS_TABLE).values([_row(run) for run in runs]))
    _report(outcome, recorded.id, recorded.type, recorded.received_at)
    return recorded, outcome, []


_RUN_COLUMNS = (
    "event_id",
    "handler",
    "status",
    "attempts",
    "last_error",
    "leased_until",
    "next_attempt_at",
    "updated_at",
    "finished_at",
)


def _row(run: HandlerRun) -> dict[str, Any]:
    """A run built in memory, as the values of a plain insert (no ORM unit of work: one
    statement for all of an event's runs, at a fraction of the cost)."""
    row = {column: getattr(run, column) for column in _RUN_COLUMNS}
    row["status"] = row["status"] or RunStatus.PENDING
    row["updated_at"] = row["updated_at"] if row["updated_at"] is not None else func.now()
    return row


def apply_claimed_runs(
    sessions: sessionmaker[Session],
    event: RecordedEvent,
    handlers: list[str],
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
) -> BatchOutcome:
    """Apply the claimed runs of one event. Raises only when the transaction itself fails
    (the runs then stay claimed, pending, for a handler task to take over)."""
    outcome = BatchOutcome()
    with transaction(sessions) as session:
        limit_statements(session, dt.timedelta(seconds=policy.lease_seconds))
        runs = lock_runs(session, event.id, handlers)
        for handler in handlers:
            run = runs.get(handler)
            if run is None or run.status != RunStatus.PENDING:
                continue  # replayed or dead-lettered by an operator meanwhile
            _apply_one(session, event, run, stripe, policy, outcome)
        if outcome.done:
            session.execute(mark_done_statement(event.id, outcome.done))
    _report(outcome, event.id, event.type, event.received_at)
    return outcome


def _apply_one(
    session: Session,
    event: RecordedEvent,
    run: HandlerRun,
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
    outcome: BatchOutcome,
) -> None:
    # Each handler gets the event afresh, as stored: one that edits its payload cannot touch
    # another's.
    payload = json.loads(json.dumps(event.payload))
    view = EventView(event.id, event.type, event.created, payload, stripe)
    try:
        with session.begin_nested():
            registry.get(run.handler)(session, view)
    except Exception as error:  # noqa: BLE001 - every handler failure is counted; the policy decides
        dead, countdown = note_failure(run, error_text(error), error, policy)
        if dead:
            outcome.dead.append((run.handler, error))
        else:
            outcome.retries[run.handler] = Retry(countdown)
        _log_failure(event.id, run.handler, run.attempts, error, dead, countdown)
        return
    outcome.done.append(run.handler)


def _log_failure(
    event_id: str, handler: str, attempts: int, error: BaseException, dead: bool, countdown: float
) -> None:
    if dead:
        log.error("run %s/%s is dead after %d attempts: %s", event_id, handler, attempts, error)
        return
    log.warning(
        "run %s/%s failed (attempt %d, %s), retrying in %.1fs",
        event_id,
        handler,
        attempts,
        "transient" if is_transient(error) else "permanent",
        countdown,
    )


def _report(
    outcome: BatchOutcome, event_id: str, event_type: str, received_at: dt.datetime
) -> None:
    """Metrics and alerts, once the commit made the outcome true."""
    age = max(0.0, (dt.datetime.now(dt.UTC) - received_at).total_seconds())
    for handler in outcome.done:
        HANDLER_RUNS.labels(handler=handler, status=RunStatus.DONE).inc()
        EVENT_PROCESSING.observe(age)
    for handler in outcome.retries:
        HANDLER_RUNS.labels(handler=handler, status="retry").inc()
    for handler, error in outcome.dead:
        HANDLER_RUNS.labels(handler=handler, status=RunStatus.DEAD).inc()
        report_dead_letter(error, event_id=event_id, handler=handler, event_type=event_type)
