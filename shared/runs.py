"""Executing one handler run exactly once in effect, and recording failures."""

from __future__ import annotations

import datetime as dt
import logging
import random
import traceback
from dataclasses import dataclass
from enum import Enum

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.crypto import PayloadCipher
from shared.db import transaction
from shared.errors import is_transient
from shared.events import stored_payload
from shared.handlers import EventView, registry
from shared.metrics import EVENT_PROCESSING, HANDLER_RUNS
from shared.models import HandlerRun, StripeEvent
from shared.redaction import redact
from shared.stripe_gateway import PaymentIntentReader

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000
TRACEBACK_FRAMES = 8


class RunOutcome(Enum):
    DONE = "done"
    ALREADY_FINISHED = "already_finished"
    MISSING = "missing"


@dataclass(frozen=True)
class RetryPolicy:
    max_transient_attempts: int
    max_permanent_attempts: int
    base_seconds: float
    cap_seconds: float

    def limit_for(self, error: BaseException) -> int:
        return self.max_transient_attempts if is_transient(error) else self.max_permanent_attempts

    def countdown(self, attempts: int) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempts)]."""
        ceiling = min(self.cap_seconds, self.base_seconds * (2 ** max(0, attempts - 1)))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security


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
) -> RunOutcome:
    """Apply one handler to one event and mark the run done, in a single transaction.

    The row lock makes concurrent deliveries of the same task wait for each other; the second one
    finds the run done and does nothing. A crash before the commit leaves neither the effect nor
    the mark, so the run is retried whole.
    """
    with transaction(sessions) as session:
        run = lock_run(session, event_id, handler_name)
        if run is None:
            return RunOutcome.MISSING
        if run.status != "pending":
            return RunOutcome.ALREADY_FINISHED
        event = session.get(StripeEvent, event_id)
        assert event is not None  # handler_runs.event_id is a foreign key
        handler = registry.get(handler_name)
        payload = stored_payload(event, cipher)
        handler(session, EventView(event.id, event.type, event.created, payload, stripe))
        run.status = "done"
        run.attempts = run.attempts + 1
        run.last_error = None
        run.next_attempt_at = None
        run.updated_at = func.now()
        run.finished_at = func.now()
        received_at = event.received_at
    HANDLER_RUNS.labels(handler=handler_name, status="done").inc()
    EVENT_PROCESSING.observe(max(0.0, (dt.datetime.now(dt.UTC) - received_at).total_seconds()))
    return RunOutcome.DONE


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
        if run is None or run.status != "pending":
            # Someone else finished or dead-lettered it meanwhile: nothing to retry.
            return FailureRecord(run.attempts if run else 0, False, transient, 0.0, None)
        run.attempts = run.attempts + 1
        run.last_error = summary
        run.updated_at = func.now()
        dead = run.attempts >= policy.limit_for(error)
        countdown = 0.0 if dead else policy.countdown(run.attempts)
        if dead:
            run.status = "dead"
            run.next_attempt_at = None
            run.finished_at = func.now()
        else:
            run.next_attempt_at = func.now() + dt.timedelta(seconds=countdown)
        event_type = session.execute(
            select(StripeEvent.type).where(StripeEvent.id == event_id)
        ).scalar_one_or_none()
        return FailureRecord(run.attempts, dead, transient, countdown, event_type)


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
