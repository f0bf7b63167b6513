"""Executing one handler run exactly once in effect, and recording failures."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.infra.crypto import PayloadCipher
from shared.infra.errors import is_transient
from shared.infra.stripe_gateway import PaymentIntentReader
from shared.ledger.event_rows import stored_payload
from shared.ledger.handlers import EventView, HandlerRegistry
from shared.ledger.handlers import registry as default_registry
from shared.ledger.retry import Retry, RetryPolicy
from shared.ledger.runs.apply import call_handler
from shared.ledger.runs.reporting import RunFailure, report_done, report_failure, report_worker_died
from shared.ledger.runs.rows import (
    MAX_ERROR_CHARS,
    error_text,
    lock_run,
    mark_done,
    note_failure,
)
from shared.ledger.statement_limits import limit_statements
from shared.models import RunStatus, StripeEvent

log = logging.getLogger(__name__)


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
    registry: HandlerRegistry = default_registry,
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
        received_at = _apply(session, registry, event_id, handler_name, lease, cipher, stripe)
    if received_at is None:
        return RunOutcome.ALREADY_FINISHED
    report_done(handler_name, received_at)
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
    registry: HandlerRegistry,
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
    payload = stored_payload(event, cipher)
    view = EventView(event.id, event.type, event.created, payload, stripe)
    call_handler(session, registry, handler_name, view)
    mark_done(run)
    return event.received_at


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


def run_handler_once(
    sessions: sessionmaker[Session],
    event_id: str,
    handler: str,
    cipher: PayloadCipher,
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
    *,
    registry: HandlerRegistry = default_registry,
) -> Retry | None:
    """One delivery of a handler task: apply the run, or count its failure. Returns when to
    try again (the Celery task only translates this into ``self.retry``), or None when the run
    needs nothing more from this message."""
    try:
        outcome = execute_run(
            sessions, event_id, handler, cipher, stripe, policy=policy, registry=registry
        )
    except Exception as error:  # noqa: BLE001 - every handler failure is counted; the policy decides
        return _failed(sessions, event_id, handler, error, policy)
    if outcome is RunOutcome.LEASED:
        # Another delivery holds the run, or one whose worker died does until its lease ends:
        # look again then. A finished run will be left alone; an abandoned one is claimed.
        log.info("run %s/%s is leased; looking again later", event_id, handler)
        return policy.while_leased()
    if outcome is RunOutcome.DEAD:
        report_worker_died(event_id, handler)
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
    if failure.attempts == 0:
        return None  # finished elsewhere meanwhile
    report_failure(
        event_id,
        RunFailure(handler, failure.attempts, error, failure.dead, failure.countdown),
        failure.event_type,
    )
    return None if failure.dead else Retry(failure.countdown)
