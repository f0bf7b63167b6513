"""Applying handlers: the one function that calls a handler, and an event's runs applied in one
transaction, each isolated by a savepoint.

Every path calls a handler through ``call_handler``: a first delivery's runs
(``apply_new_runs``, in shared.ledger.ingest.first_delivery's transaction), the runs a
redelivery's ingest just claimed (``apply_claimed_runs``), and a run as its own task
(shared.ledger.runs.task). Each handler's effect and its done mark commit together, inside a
savepoint of its own: a handler that fails is rolled back to its savepoint alone, its failure
counted on its run, and the others commit; a failed run is retried on its own, as a handler
task. Every promise of a handler run holds: one row per (event, handler), effect and done mark
in one commit, attempts counted, and the run rows locked for the whole transaction, so a second
delivery that takes a run over once its lease ends waits for this commit and then finds it done.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.effects.outbox import Effects
from shared.infra.stripe_gateway import PaymentIntentReader
from shared.ledger.event_rows import RecordedEvent
from shared.ledger.handlers import EventView, HandlerRegistry
from shared.ledger.handlers import registry as default_registry
from shared.ledger.retry import RetryPolicy
from shared.ledger.runs.reporting import RunFailure, RunsOutcome, report_outcome
from shared.ledger.runs.rows import (
    error_text,
    lock_runs,
    mark_done,
    mark_done_statement,
    note_failure,
)
from shared.ledger.statement_limits import limit_statements
from shared.models import HandlerRun, RunStatus


def call_handler(
    session: Session, registry: HandlerRegistry, handler: str, view: EventView
) -> None:
    """Apply one handler to one event in the caller's transaction, the effects it asks for
    written in that transaction too. Its pending ORM changes are flushed here, so what they
    raise is its own failure, not the next handler's."""
    registry.get(handler)(session, replace(view, effects=Effects(session, view.id, handler)))
    session.flush()


class HandlerFailed(Exception):
    """A handler run without a savepoint failed: its transaction is void."""

    def __init__(self, event_id: str, handler: str, error: Exception) -> None:
        super().__init__(handler)
        self.event_id = event_id
        self.handler = handler
        self.error = error

    def names(self, event_id: str, handler: str) -> bool:
        return (self.event_id, self.handler) == (event_id, handler)


def apply_unisolated(
    session: Session,
    event: RecordedEvent,
    handler: str,
    stripe: PaymentIntentReader | None,
    registry: HandlerRegistry,
) -> None:
    """Run a handler with no savepoint of its own. Raises HandlerFailed when it fails, the
    transaction then being fit only to roll back."""
    try:
        call_handler(session, registry, handler, _view(event, stripe))
    except Exception as error:  # counted by the isolated try that follows
        raise HandlerFailed(event.id, handler, error) from error


def _view(event: RecordedEvent, stripe: PaymentIntentReader | None) -> EventView:
    # Each handler gets the event afresh, as stored: one that edits its payload cannot touch
    # another's.
    payload = json.loads(json.dumps(event.payload))
    return EventView(event.id, event.type, event.created, payload, stripe)


def apply_claimed_runs(
    sessions: sessionmaker[Session],
    event: RecordedEvent,
    handlers: list[str],
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
    *,
    registry: HandlerRegistry = default_registry,
) -> RunsOutcome:
    """Apply the claimed runs of one event. Raises only when the transaction itself fails
    (the runs then stay claimed, pending, for a handler task to take over)."""
    outcome = RunsOutcome()
    with transaction(sessions) as session:
        limit_statements(session, dt.timedelta(seconds=policy.lease_seconds))
        runs = lock_runs(session, event.id, handlers)
        for handler in handlers:
            run = runs.get(handler)
            if run is None or run.status != RunStatus.PENDING:
                continue  # replayed or dead-lettered by an operator meanwhile
            apply_one(session, event, run, stripe, policy, outcome, registry=registry)
        if outcome.done:
            session.execute(mark_done_statement(event.id, outcome.done))
    report_outcome(outcome, event.id, event.type, event.received_at)
    return outcome


def apply_one(
    session: Session,
    event: RecordedEvent,
    run: HandlerRun,
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
    outcome: RunsOutcome,
    known_error: Exception | None = None,
    *,
    registry: HandlerRegistry = default_registry,
) -> None:
    """Apply one run in a savepoint of its own and note its outcome on it; with
    ``known_error``, only note that failure (the handler ran and failed a moment ago)."""
    error = known_error or _run_in_savepoint(session, registry, run.handler, _view(event, stripe))
    if error is None:
        outcome.done.append(run.handler)
        return
    own = registry.retry_policy(run.handler, policy)
    dead, countdown = note_failure(run, error_text(error), error, own)
    outcome.failures.append(RunFailure(run.handler, run.attempts, error, dead, countdown))


def _run_in_savepoint(
    session: Session, registry: HandlerRegistry, handler: str, view: EventView
) -> Exception | None:
    """Run a handler; when it fails, roll back to before it and return its error.

    Only what the handler and its own changes raise is its failure. Releasing the savepoint
    is outside that: an error met there (Celery's soft time limit is raised wherever the process
    is) may come after PostgreSQL released it, the effect then part of the transaction, so it
    propagates and the whole transaction goes. Counted as the handler's failure, the effect
    would commit with a retry due, and the retry apply it again."""
    savepoint = session.begin_nested()
    try:
        call_handler(session, registry, handler, view)
    except Exception as error:  # noqa: BLE001 - every handler failure is counted; the policy decides
        savepoint.rollback()
        return error
    savepoint.commit()
    return None


def apply_new_runs(
    session: Session,
    event: RecordedEvent,
    stripe: PaymentIntentReader | None,
    policy: RetryPolicy,
    registry: HandlerRegistry,
    failure: HandlerFailed | None,
    isolate: bool,
) -> tuple[RunsOutcome, list[HandlerRun]]:
    """Every handler of an event this transaction just recorded, as runs for the caller to write
    with their outcome (one attempt each); the first unisolated unless ``isolate``. ``failure``
    is that first call's from a try before, if it failed."""
    outcome = RunsOutcome()
    runs = [HandlerRun(event_id=event.id, handler=h, attempts=1) for h in event.handlers]
    for index, run in enumerate(runs):
        if index == 0 and not isolate:
            apply_unisolated(session, event, run.handler, stripe, registry)  # raises HandlerFailed
            outcome.done.append(run.handler)
        else:
            known = failure.error if failure and failure.names(event.id, run.handler) else None
            apply_one(session, event, run, stripe, policy, outcome, known, registry=registry)
        if run.handler in outcome.done:
            mark_done(run)
    return outcome, runs
