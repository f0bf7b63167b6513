"""Executing one handler run exactly once in effect, and recording failures."""

from __future__ import annotations

import logging
import random
import traceback
from enum import Enum

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.handlers import EventView, registry
from shared.models import HandlerRun, StripeEvent

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000


class RunOutcome(Enum):
    DONE = "done"
    ALREADY_FINISHED = "already_finished"
    MISSING = "missing"


def execute_run(sessions: sessionmaker[Session], event_id: str, handler_name: str) -> RunOutcome:
    """Apply one handler to one event and mark the run done, in a single transaction.

    The row lock makes concurrent deliveries of the same task wait for each other; the second one
    finds the run done and does nothing. A crash before the commit leaves neither the effect nor
    the mark, so the run is retried whole.
    """
    with transaction(sessions) as session:
        run = session.execute(
            select(HandlerRun)
            .where(HandlerRun.event_id == event_id, HandlerRun.handler == handler_name)
            .with_for_update()
        ).scalar_one_or_none()
        if run is None:
            return RunOutcome.MISSING
        if run.status != "pending":
            return RunOutcome.ALREADY_FINISHED
        event = session.get(StripeEvent, event_id)
        assert event is not None  # handler_runs.event_id is a foreign key
        handler = registry.get(handler_name)
        handler(session, EventView(event.id, event.type, event.created, event.payload))
        run.status = "done"
        run.attempts = run.attempts + 1
        run.last_error = None
        run.updated_at = func.now()
        run.finished_at = func.now()
    return RunOutcome.DONE


def record_failure(
    sessions: sessionmaker[Session],
    event_id: str,
    handler_name: str,
    error: BaseException,
    *,
    max_attempts: int,
) -> tuple[int, bool]:
    """Count a failed attempt. Returns (attempts so far, whether the run is now dead)."""
    summary = _error_text(error)
    with transaction(sessions) as session:
        run = session.execute(
            select(HandlerRun)
            .where(HandlerRun.event_id == event_id, HandlerRun.handler == handler_name)
            .with_for_update()
        ).scalar_one_or_none()
        if run is None or run.status != "pending":
            return (run.attempts if run else 0), False
        run.attempts = run.attempts + 1
        run.last_error = summary
        run.updated_at = func.now()
        dead = run.attempts >= max_attempts
        if dead:
            run.status = "dead"
            run.finished_at = func.now()
        return run.attempts, dead


def _error_text(error: BaseException) -> str:
    # The traceback names code locations only; exception messages from our handlers never carry
    # secrets because handlers see event payloads, not configuration.
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__, limit=8))
    return text[-MAX_ERROR_CHARS:]


def backoff_seconds(attempt: int, *, base: float = 2.0, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2 ** max(0, attempt)))
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security
