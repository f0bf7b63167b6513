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
import logging
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.infra.crypto import PayloadCipher
from shared.infra.errors import is_transient
from shared.infra.stripe_gateway import PaymentIntentReader
from shared.ledger.events import stored_payload
from shared.ledger.handlers import EventView, registry
from shared.ledger.retry import Retry, RetryPolicy
from shared.ledger.runs import error_text, limit_statements, lock_run, mark_done, note_failure
from shared.models import RunStatus, StripeEvent
from shared.observability.metrics import EVENT_PROCESSING, HANDLER_RUNS
from shared.observability.sentry import report_dead_letter

log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    done: list[str] = field(default_factory=list)
    # Handler -> when to run it again as a task of its own.
    retries: dict[str, Retry] = field(default_factory=dict)
    dead: list[tuple[str, BaseException]] = field(default_factory=list)


def apply_claimed_runs(
    sessions: sessionmaker[Session],
    event_id: str,
    handlers: list[str],
    cipher: PayloadCipher,
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
) -> BatchOutcome:
    """Apply the claimed runs of one event. Raises only when the transaction itself fails
    (the runs then stay claimed, pending, for a handler task to take over)."""
    outcome = BatchOutcome()
    with transaction(sessions) as session:
        limit_statements(session, dt.timedelta(seconds=policy.lease_seconds))
        event = session.get(StripeEvent, event_id)
        assert event is not None  # the runs' foreign key
        for handler in handlers:
            _apply_one(session, event, handler, cipher, stripe, policy, outcome)
        event_type, received_at = event.type, event.received_at
    _report(outcome, event_id, event_type, received_at)
    return outcome


def _apply_one(
    session: Session,
    event: StripeEvent,
    handler: str,
    cipher: PayloadCipher,
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
    outcome: BatchOutcome,
) -> None:
    run = lock_run(session, event.id, handler)
    if run is None or run.status != RunStatus.PENDING:
        return  # replayed or dead-lettered by an operator meanwhile
    # Each handler gets the event afresh: one that edits its payload cannot touch another's.
    view = EventView(event.id, event.type, event.created, stored_payload(event, cipher), stripe)
    try:
        with session.begin_nested():
            registry.get(handler)(session, view)
    except Exception as error:  # noqa: BLE001 - every handler failure is counted; the policy decides
        dead, countdown = note_failure(run, error_text(error), error, policy)
        if dead:
            outcome.dead.append((handler, error))
        else:
            outcome.retries[handler] = Retry(countdown)
        _log_failure(event.id, handler, run.attempts, error, dead, countdown)
        return
    mark_done(run)
    outcome.done.append(handler)


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
