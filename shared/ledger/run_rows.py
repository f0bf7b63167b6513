"""The row of a handler run: locking it and writing its outcome.

Shared by a single run (shared.ledger.runs) and an event's runs applied together
(shared.ledger.batch), so a run is marked done or failed the same way on either path.
"""

from __future__ import annotations

import datetime as dt
import traceback

from sqlalchemy import Update, func, select, update
from sqlalchemy.orm import Session

from shared.ledger.retry import GiveUp, RetryPolicy
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
