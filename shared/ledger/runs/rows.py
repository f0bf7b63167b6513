"""The row of a handler run: locking it and writing its outcome.

Shared by a run as its own task (shared.ledger.runs.task) and an event's runs applied together
(shared.ledger.runs.apply), so a run is marked done or failed the same way on either path.
"""

from __future__ import annotations

import datetime as dt
import traceback
from typing import Any

from sqlalchemy import (
    Boolean,
    Interval,
    Update,
    bindparam,
    case,
    func,
    insert,
    null,
    select,
    update,
)
from sqlalchemy.orm import Session

from shared.ledger.event_rows import RUNS_TABLE
from shared.ledger.retry import GiveUp, RetryPolicy
from shared.ledger.runs.reporting import RunsOutcome
from shared.models import HandlerRun, RunStatus
from shared.observability.redaction import redact

MAX_ERROR_CHARS = 4000


TRACEBACK_FRAMES = 8


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


# A first delivery's runs, written with their outcome by one statement for all of them. Built
# once from bound parameters, so SQLAlchemy compiles it once per process (a multi-row VALUES
# list is compiled again on every call). Every time is the database's clock, as elsewhere.
INSERT_RUN_OUTCOMES = insert(RUNS_TABLE).values(
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


def outcome_row(run: HandlerRun, outcome: RunsOutcome) -> dict[str, Any]:
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


def pending_row(event_id: str, handler: str, status: str = RunStatus.PENDING) -> dict[str, Any]:
    """A run written untried: pending for its own task (a handler out of the batch), or held
    (a handler that does not accept the event's API version)."""
    return {
        "event_id": event_id,
        "handler": handler,
        "status": status,
        "attempts": 0,
        "last_error": None,
        "retry_in": None,
        "finished": False,
    }
