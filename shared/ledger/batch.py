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

from sqlalchemy import Boolean, Interval, bindparam, case, func, insert, null
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
    """A first delivery: record the event, apply every handler and write its runs with their
    outcome, all in one transaction. When the event was known already, (None, nothing done,
    the runs still pending) instead.

    The first handler runs without a savepoint (two round trips fewer; an event of one
    handler needs none): should it fail, the whole transaction is rolled back, nothing of it
    visible to anyone, and done again with that failure noted on its run, the handler not
    called again (its attempts match its calls). Every other handler runs in a savepoint of
    its own, so its failure is rolled back alone and counted on its run; none is called twice.

    Only for a message the broker has not delivered before: should a handler kill its worker
    here, nothing commits, not even the attempt, and the broker redelivers the message marked
    as such; the redelivery takes ``ingest`` then ``apply_claimed_runs``, which commit the
    claimed attempt first, so such a handler still ends dead instead of looping."""
    try:
        return _record_and_apply(sessions, event, source, cipher, stripe, policy, None)
    except _HandlerFailed as failure:
        return _record_and_apply(sessions, event, source, cipher, stripe, policy, failure)


class _HandlerFailed(Exception):
    """The first handler, run without a savepoint, failed: its transaction is void."""

    def __init__(self, handler: str, error: Exception) -> None:
        super().__init__(handler)
        self.handler = handler
        self.error = error


def _record_and_apply(
    sessions: sessionmaker[Session],
    event: dict[str, Any],
    source: str,
    cipher: PayloadCipher,
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
    failure: _HandlerFailed | None,
) -> tuple[RecordedEvent | None, BatchOutcome, list[str]]:
    """One try of ``record_and_apply``; ``failure`` is the first handler's from the try
    before, if it failed."""
    outcome = BatchOutcome()
    with transaction(sessions) as session:
        limit_statements(session, dt.timedelta(seconds=policy.lease_seconds))
        recorded = insert_event(session, event, source, cipher)
        if recorded is None:
            return None, outcome, pending_handlers(session, event["id"])
        # The runs are written last, with their outcome, in one statement.
        runs = [HandlerRun(event_id=recorded.id, handler=h, attempts=1) for h in recorded.handlers]
        for index, run in enumerate(runs):
            if index == 0 and failure is None:
                _apply_unisolated(session, recorded, run.handler, stripe)
                outcome.done.append(run.handler)
            else:
                known = failure.error if failure and run.handler == failure.handler else None
                _apply_one(session, recorded, run, stripe, policy, outcome, known)
            if run.handler in outcome.done:
                mark_done(run)
        if runs:
            session.execute(_INSERT_RUN_OUTCOMES, [_outcome_row(run, outcome) for run in runs])
    _report(outcome, recorded.id, recorded.type, recorded.received_at)
    return recorded, outcome, []


def _apply_unisolated(
    session: Session, event: RecordedEvent, handler: str, stripe: PaymentIntentReader | None
) -> None:
    """Run a handler with no savepoint of its own. Raises _HandlerFailed when it fails, the
    transaction then being fit only to roll back."""
    try:
        registry.get(handler)(session, _view(event, stripe))
    except Exception as error:  # counted by the isolated try that follows
        raise _HandlerFailed(handler, error) from error


def _view(event: RecordedEvent, stripe: PaymentIntentReader | None) -> EventView:
    # Each handler gets the event afresh, as stored: one that edits its payload cannot touch
    # another's.
    payload = json.loads(json.dumps(event.payload))
    return EventView(event.id, event.type, event.created, payload, stripe)


# A first delivery's runs, written with their outcome by one statement for all of them. Built
# once from bound parameters, so SQLAlchemy compiles it once per process (a multi-row VALUES
# list is compiled again on every call). Every time is the database's clock, as elsewhere.
_INSERT_RUN_OUTCOMES = insert(RUNS_TABLE).values(
    event_id=bindparam("event_id"),
    handler=bindparam("handler"),
    status=bindparam("status"),
    attempts=bindparam("attempts"),
    last_error=bindparam("last_error"),
    # NULL + interval is NULL: no retry due.
    next_attempt_at=func.now() + bindparam("retry_in", type_=Interval),
    updated_at=func.now(),
    finished_at=case((bindparam("finished", type_=Boolean), func.now()), else_=null()),
)


def _outcome_row(run: HandlerRun, outcome: BatchOutcome) -> dict[str, Any]:
    """A run applied in memory (``mark_done`` or ``note_failure``), as the statement's values."""
    retry = outcome.retries.get(run.handler)
    status = run.status or RunStatus.PENDING
    return {
        "event_id": run.event_id,
        "handler": run.handler,
        "status": status,
        "attempts": run.attempts,
        "last_error": run.last_error,
        "retry_in": None if retry is None else dt.timedelta(seconds=retry.countdown),
        "finished": status != RunStatus.PENDING,
    }


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
    known_error: Exception | None = None,
) -> None:
    """Apply one run in a savepoint of its own and note its outcome on it; with
    ``known_error``, only note that failure (the handler ran and failed a moment ago)."""
    error = known_error or _run_in_savepoint(session, run.handler, _view(event, stripe))
    if error is None:
        outcome.done.append(run.handler)
        return
    dead, countdown = note_failure(run, error_text(error), error, policy)
    if dead:
        outcome.dead.append((run.handler, error))
    else:
        outcome.retries[run.handler] = Retry(countdown)
    _log_failure(event.id, run.handler, run.attempts, error, dead, countdown)


def _run_in_savepoint(session: Session, handler: str, view: EventView) -> Exception | None:
    """Run a handler; when it fails, roll back to before it and return its error."""
    try:
        with session.begin_nested():
            registry.get(handler)(session, view)
    except Exception as error:  # noqa: BLE001 - every handler failure is counted; the policy decides
        return error
    return None


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
