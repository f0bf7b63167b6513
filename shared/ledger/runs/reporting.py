"""What a run came to, told once the commit made it true: the log line, the counters and the
dead-letter alert, the same for a run applied with its event's others and a run as its own task.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from shared.infra.errors import is_transient
from shared.ledger.retry import Retry
from shared.models import RunStatus
from shared.observability.metrics import EVENT_PROCESSING, HANDLER_RUNS
from shared.observability.sentry import report_dead_letter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunFailure:
    """A failed attempt as its run's row now holds it."""

    handler: str
    attempts: int
    error: BaseException
    dead: bool
    # Seconds until the retry (0 when dead).
    countdown: float


@dataclass
class RunsOutcome:
    """What the runs of one event applied together came to."""

    done: list[str] = field(default_factory=list)
    failures: list[RunFailure] = field(default_factory=list)

    @property
    def retries(self) -> dict[str, Retry]:
        """Handler -> when to run it again as a task of its own."""
        return {f.handler: Retry(f.countdown) for f in self.failures if not f.dead}

    @property
    def dead(self) -> list[tuple[str, BaseException]]:
        return [(f.handler, f.error) for f in self.failures if f.dead]


def report_outcome(
    outcome: RunsOutcome, event_id: str, event_type: str, received_at: dt.datetime
) -> None:
    for handler in outcome.done:
        report_done(handler, received_at)
    for failure in outcome.failures:
        report_failure(event_id, failure, event_type)


def report_done(handler: str, received_at: dt.datetime) -> None:
    HANDLER_RUNS.labels(handler=handler, status=RunStatus.DONE).inc()
    EVENT_PROCESSING.observe(max(0.0, (dt.datetime.now(dt.UTC) - received_at).total_seconds()))


def report_failure(event_id: str, failure: RunFailure, event_type: str | None) -> None:
    handler, error = failure.handler, failure.error
    if failure.dead:
        HANDLER_RUNS.labels(handler=handler, status=RunStatus.DEAD).inc()
        log.error(
            "run %s/%s is dead after %d attempts: %s: %s",
            event_id,
            handler,
            failure.attempts,
            type(error).__name__,
            error,
        )
        report_dead_letter(error, event_id=event_id, handler=handler, event_type=event_type)
        return
    HANDLER_RUNS.labels(handler=handler, status="retry").inc()
    log.warning(
        "run %s/%s failed (attempt %d, %s), retrying in %.1fs",
        event_id,
        handler,
        failure.attempts,
        "transient" if is_transient(error) else "permanent",
        failure.countdown,
    )


def report_worker_died(event_id: str, handler: str) -> None:
    """A run out of attempts before one could start: its worker died on every one."""
    HANDLER_RUNS.labels(handler=handler, status=RunStatus.DEAD).inc()
    log.error("run %s/%s is dead: its worker died on every attempt", event_id, handler)
    report_dead_letter(
        RuntimeError("worker died or timed out on every attempt"),
        event_id=event_id,
        handler=handler,
        event_type=None,
    )
