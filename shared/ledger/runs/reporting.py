"""Telling the world what a run came to: the log line, the counters and the dead-letter alert,
once the commit made the outcome true.
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


@dataclass
class BatchOutcome:
    done: list[str] = field(default_factory=list)
    # Handler -> when to run it again as a task of its own.
    retries: dict[str, Retry] = field(default_factory=dict)
    dead: list[tuple[str, BaseException]] = field(default_factory=list)


def log_failure(
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


def report_outcome(
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
