"""Executing one handler run exactly once in effect, and recording failures."""

from __future__ import annotations

import datetime as dt
import logging
import traceback
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import Update, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.infra.crypto import PayloadCipher
from shared.infra.errors import is_transient
from shared.infra.stripe_gateway import PaymentIntentReader
from shared.ledger.events import stored_payload
from shared.ledger.handlers import EventView, registry
from shared.ledger.retry import GiveUp, Retry, RetryPolicy
from shared.models import HandlerRun, RunStatus, StripeEvent
from shared.observability.metrics import EVENT_PROCESSING, HANDLER_RUNS
from shared.observability.redaction import redact
from shared.observability.sentry import report_dead_letter

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000
TRACEBACK_FRAMES = 8


class RunOutcome(Enum):
    DONE = "done"
    ALREADY_FINISHED = "already_finished"
    MISSING = "missing"
    # Another delivery of the task holds the run right now.
    LEASED = "leased"
    # Out of attempts before this one could start (earlier ones died with their worker).
    DEAD = "dead"


@dataclass(frozen=True)
class FailureRecord:
    attempts: int
    dead: bool
    transient: bool
    countdown: float
    event_type: str | None


def execute_run(
    sessions: sessionmaker[Session],
    event_id: str,
    handler_name: str,
    cipher: PayloadCipher,
    stripe: PaymentIntentReader | None = None,
    *,
    policy: RetryPolicy,
) -> RunOutcome:
    """Apply one handler to one event and mark the run done, in a single transaction.

    First the attempt is claimed and counted in a transaction of its own, so that a handler
    which kills or hangs its worker still uses up attempts and ends in the dead-letter list
    instead of being redelivered for ever. The claim is a lease: another delivery of the same
    task while it runs leaves the run alone. Then the handler's effect and the done mark
    commit together; a crash before that commit leaves neither, and the run is retried whole.
    """
    lease = dt.timedelta(seconds=policy.lease_seconds)
    with transaction(sessions) as session:
        claimed = _claim(session, event_id, handler_name, lease, policy)
    if claimed is not None:
        return claimed
    with transaction(sessions) as session:
        received_at = _apply(session, event_id, handler_name, lease, cipher, stripe)
    if received_at is None:
        return RunOutcome.ALREADY_FINISHED
    HANDLER_RUNS.labels(handler=handler_name, status=RunStatus.DONE).inc()
    EVENT_PROCESSING.observe(max(0.0, (dt.datetime.now(dt.UTC) - received_at).total_seconds()))
    return RunOutcome.DONE


def _claim(
    session: Session, event_id: str, handler_name: str, lease: dt.timedelta, policy: RetryPolicy
) -> RunOutcome | None:
    """Count the attempt and lease the run; or say why this delivery must leave it alone."""
    run = lock_run(session, event_id, handler_name)
    if run is None:
        return RunOutcome.MISSING
    if run.status != RunStatus.PENDING:
        return RunOutcome.ALREADY_FINISHED
    now = session.execute(select(func.now())).scalar_one()
    if run.leased_until is not None and run.leased_until > now:
        return RunOutcome.LEASED
    if run.attempts >= policy.max_transient_attempts:
        run.status = RunStatus.DEAD
        run.finished_at = func.now()
        run.updated_at = func.now()
        run.last_error = (
            (run.last_error or "")
            + "\nNo attempts left: the worker died or timed out while running this handler."
        )[-MAX_ERROR_CHARS:]
        return RunOutcome.DEAD
    run.attempts = run.attempts + 1
    run.leased_until = now + lease
    run.updated_at = func.now()
    return None


def _apply(
    session: Session,
    event_id: str,
    handler_name: str,
    lease: dt.timedelta,
    cipher: PayloadCipher,
    stripe: PaymentIntentReader | None,
) -> dt.datetime | None:
    """The handler's effect and the done mark, in the caller's one transaction. Returns when
    the event was received, or None if the run was finished meanwhile."""
    # A handler stuck on a lock or a query fails (and is retried) instead of holding its
    # worker and its row lock past the lease.
    limit_statements(session, lease)
    run = lock_run(session, event_id, handler_name)
    if run is None or run.status != RunStatus.PENDING:
        return None
    event = session.get(StripeEvent, event_id)
    assert event is not None  # handler_runs.event_id is a foreign key
    handler = registry.get(handler_name)
    payload = stored_payload(event, cipher)
    handler(session, EventView(event.id, event.type, event.created, payload, stripe))
    mark_done(run)
    return event.received_at


def limit_statements(session: Session, lease: dt.timedelta) -> None:
    """Bound every statement of this transaction by the lease (one round trip for both)."""
    timeout_ms = int(lease.total_seconds() * 1000)
    session.execute(
        text(
            f"SET LOCAL statement_timeout = {timeout_ms}; "
            f"SET LOCAL lock_timeout = {min(timeout_ms, 30000)}"
        )
    )


def record_failure(
    sessions: sessionmaker[Session],
    event_id: str,
    handler_name: str,
    error: BaseException,
    policy: RetryPolicy,
) -> FailureRecord:
    """Count a failed attempt; dead-letter the run once it has used up its attempts."""
    transient = is_transient(error)
    summary = error_text(error)
    with transaction(sessions) as session:
        run = lock_run(session, event_id, handler_name)
        if run is None or run.status != RunStatus.PENDING:
            # Someone else finished or dead-lettered it meanwhile: nothing to retry (attempts 0
            # tells the task so).
            return FailureRecord(0, False, transient, 0.0, None)
        dead, countdown = note_failure(run, summary, error, policy)
        event_type = session.execute(
            select(StripeEvent.type).where(StripeEvent.id == event_id)
        ).scalar_one_or_none()
        return FailureRecord(run.attempts, dead, transient, countdown, event_type)


def note_failure(
    run: HandlerRun, summary: str, error: BaseException, policy: RetryPolicy
) -> tuple[bool, float]:
    """Write a failed attempt (counted when it was claimed) on its locked run: dead once the
    policy says so, otherwise due again after the backoff. Returns (dead, countdown)."""
    run.last_error = summary
    run.leased_until = None
    run.updated_at = func.now()
    decision = policy.after_failure(run.attempts, error)
    if isinstance(decision, GiveUp):
        run.status = RunStatus.DEAD
        run.next_attempt_at = None
        run.finished_at = func.now()
        return True, 0.0
    run.next_attempt_at = func.now() + dt.timedelta(seconds=decision.countdown)
    return False, decision.countdown


def mark_done(run: HandlerRun) -> None:
    run.status = RunStatus.DONE
    run.last_error = None
    run.next_attempt_at = None
    run.leased_until = None
    run.updated_at = func.now()
    run.finished_at = func.now()


def mark_done_statement(event_id: str, handlers: list[str]) -> Update:
    """``mark_done`` for several runs of one event, as one statement."""
    return (
        update(HandlerRun)
        .where(HandlerRun.event_id == event_id, HandlerRun.handler.in_(handlers))
        .values(
            status=RunStatus.DONE,
            last_error=None,
            next_attempt_at=None,
            leased_until=None,
            updated_at=func.now(),
            finished_at=func.now(),
        )
    )


def lock_runs(session: Session, event_id: str, handlers: list[str]) -> dict[str, HandlerRun]:
    """Several runs of one event, locked until the transaction ends, by handler."""
    rows = session.execute(
        select(HandlerRun)
        .where(HandlerRun.event_id == event_id, HandlerRun.handler.in_(handlers))
        .order_by(HandlerRun.handler)
        .with_for_update()
    ).scalars()
    return {run.handler: run for run in rows}


def lock_run(session: Session, event_id: str, handler_name: str) -> HandlerRun | None:
    """The run row, locked until the transaction ends."""
    return session.execute(
        select(HandlerRun)
        .where(HandlerRun.event_id == event_id, HandlerRun.handler == handler_name)
        .with_for_update()
    ).scalar_one_or_none()


def error_text(error: BaseException) -> str:
    """The exception and the innermost frames of its traceback, with secrets masked."""
    lines = traceback.format_exception(
        type(error), error, error.__traceback__, limit=-TRACEBACK_FRAMES
    )
    return redact("".join(lines))[-MAX_ERROR_CHARS:]


def run_handler_once(
    sessions: sessionmaker[Session],
    event_id: str,
    handler: str,
    cipher: PayloadCipher,
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
) -> Retry | None:
    """One delivery of a handler task: apply the run, or count its failure. Returns when to
    try again (the Celery task only translates this into ``self.retry``), or None when the run
    needs nothing more from this message."""
    try:
        outcome = execute_run(sessions, event_id, handler, cipher, stripe, policy=policy)
    except Exception as error:  # noqa: BLE001 - every handler failure is counted; the policy decides
        return _failed(sessions, event_id, handler, error, policy)
    if outcome is RunOutcome.LEASED:
        # Another delivery holds the run, or one whose worker died does until its lease ends:
        # look again then. A finished run will be left alone; an abandoned one is claimed.
        log.info("run %s/%s is leased; looking again later", event_id, handler)
        return policy.while_leased()
    if outcome is RunOutcome.DEAD:
        HANDLER_RUNS.labels(handler=handler, status=RunStatus.DEAD).inc()
        log.error("run %s/%s is dead: its worker died on every attempt", event_id, handler)
        report_dead_letter(
            RuntimeError("worker died or timed out on every attempt"),
            event_id=event_id,
            handler=handler,
            event_type=None,
        )
    elif outcome is RunOutcome.MISSING:
        log.error("run %s/%s does not exist; nothing to do", event_id, handler)
    else:
        log.info("run %s/%s: %s", event_id, handler, outcome.value)
    return None


class DatabaseUnavailable(Retry):
    """The failure could not even be recorded: the run is still pending there. Retry; should
    this message be lost too, the sweeper finds the pending row later."""


def _failed(
    sessions: sessionmaker[Session],
    event_id: str,
    handler: str,
    error: Exception,
    policy: RetryPolicy,
) -> Retry | None:
    try:
        failure = record_failure(sessions, event_id, handler, error, policy)
    except SQLAlchemyError:
        log.warning("could not record the failure of %s/%s", event_id, handler)
        return DatabaseUnavailable(policy.countdown(1))
    HANDLER_RUNS.labels(handler=handler, status="dead" if failure.dead else "retry").inc()
    if failure.dead:
        log.error(
            "run %s/%s is dead after %d attempts: %s",
            event_id,
            handler,
            failure.attempts,
            type(error).__name__,
        )
        report_dead_letter(error, event_id=event_id, handler=handler, event_type=failure.event_type)
        return None
    if failure.attempts == 0:
        return None  # finished elsewhere meanwhile
    log.warning(
        "run %s/%s failed (attempt %d, %s), retrying in %.1fs",
        event_id,
        handler,
        failure.attempts,
        "transient" if failure.transient else "permanent",
        failure.countdown,
    )
    return Retry(failure.countdown)
