"""Ingest claims an event's runs and applies them in one transaction, one savepoint each
(shared.ledger.runs.apply): a failing handler is rolled back and counted alone."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from shared.infra.crypto import PayloadCipher
from shared.ledger.event_rows import IngestResult, RecordedEvent
from shared.ledger.event_rules import EventScope
from shared.ledger.handlers import EventView, registry
from shared.ledger.ingest.first_delivery import record_and_apply
from shared.ledger.ingest.redelivery import ingest
from shared.ledger.retry import RetryPolicy
from shared.ledger.runs.apply import apply_claimed_runs
from shared.models import HandlerRun, RunStatus

TYPE = "fast.batch_event"
LEASE = dt.timedelta(seconds=60)
POLICY = RetryPolicy(
    max_transient_attempts=3, max_permanent_attempts=2, base_seconds=1, cap_seconds=10
)
SCOPE = EventScope(livemode=False, connected_accounts=())
_ids = itertools.count(1)


def _effect(session: Session, event: EventView, handler: str) -> None:
    session.execute(
        text("INSERT INTO batch_effects VALUES (:event, :handler)"),
        {"event": event.id, "handler": handler},
    )


# Calls by (event, handler), kept outside the database: a rolled-back call leaves no row.
CALLS: collections.Counter[tuple[str, str]] = collections.Counter()


@registry.handles(TYPE, name="fast.batch_first")
def _first(session: Session, event: EventView) -> None:
    CALLS[event.id, "fast.batch_first"] += 1
    _effect(session, event, "fast.batch_first")
    if event.object.get("fail_first"):
        raise ValueError("a first handler bug")


@registry.handles(TYPE, name="fast.batch_second")
def _second(session: Session, event: EventView) -> None:
    CALLS[event.id, "fast.batch_second"] += 1
    # Writes, then fails: its write must not survive.
    _effect(session, event, "fast.batch_second")
    if event.object.get("fail"):
        raise ValueError("a handler bug")


@pytest.fixture
def effects(db: sessionmaker[Session]) -> sessionmaker[Session]:
    with db() as session, session.begin():
        session.execute(text("CREATE TEMP TABLE batch_effects (event_id text, handler text)"))
    return db


def _queued(cipher: PayloadCipher, **obj: Any) -> tuple[str, str]:
    event_id = f"evt_batch_{next(_ids)}_{dt.datetime.now().timestamp()}"
    event = {
        "id": event_id,
        "object": "event",
        "type": TYPE,
        "created": 1_700_000_000,
        "livemode": False,
        "data": {"object": {"id": "obj_1", **obj}},
    }
    return event_id, cipher.encrypt(event)


def _recorded(result: IngestResult) -> RecordedEvent:
    assert result.recorded is not None
    return result.recorded


def _runs(db: sessionmaker[Session], event_id: str) -> dict[str, HandlerRun]:
    with db() as session:
        rows = session.execute(select(HandlerRun).where(HandlerRun.event_id == event_id))
        return {run.handler: run for run in rows.scalars()}


def _effects(db: sessionmaker[Session], event_id: str) -> list[str]:
    with db() as session:
        query = text("SELECT handler FROM batch_effects WHERE event_id = :e ORDER BY handler")
        return list(session.execute(query, {"e": event_id}).scalars())


def test_a_new_event_comes_back_with_its_runs_claimed(effects, cipher):
    event_id, body = _queued(cipher)

    first = ingest(effects, body, "webhook", cipher, SCOPE, claim_lease=LEASE)
    again = ingest(effects, body, "webhook", cipher, SCOPE, claim_lease=LEASE)

    assert first.claimed_handlers == ["fast.batch_first", "fast.batch_second"]
    assert first.pending_handlers == []
    runs = _runs(effects, event_id)
    assert {run.attempts for run in runs.values()} == {1}
    assert all(run.leased_until is not None for run in runs.values())
    # A second delivery claims nothing: it hands the still-pending runs to handler tasks,
    # which find them leased and wait.
    assert again.claimed_handlers == []
    assert again.pending_handlers == ["fast.batch_first", "fast.batch_second"]


def test_claimed_runs_are_applied_and_marked_done_together(effects, cipher):
    event_id, body = _queued(cipher)
    result = ingest(effects, body, "webhook", cipher, SCOPE, claim_lease=LEASE)

    outcome = apply_claimed_runs(effects, _recorded(result), result.claimed_handlers, None, POLICY)

    assert outcome.done == ["fast.batch_first", "fast.batch_second"]
    assert outcome.retries == {} and outcome.dead == []
    assert _effects(effects, event_id) == ["fast.batch_first", "fast.batch_second"]
    runs = _runs(effects, event_id)
    assert {run.status for run in runs.values()} == {RunStatus.DONE}
    assert all(run.leased_until is None for run in runs.values())


def test_a_failing_handler_is_rolled_back_and_counted_alone(effects, cipher):
    event_id, body = _queued(cipher, fail=True)
    result = ingest(effects, body, "webhook", cipher, SCOPE, claim_lease=LEASE)

    outcome = apply_claimed_runs(effects, _recorded(result), result.claimed_handlers, None, POLICY)

    assert outcome.done == ["fast.batch_first"]
    assert outcome.retries["fast.batch_second"].countdown > 0
    # The failing handler's own write went with its savepoint; the other's effect stayed.
    assert _effects(effects, event_id) == ["fast.batch_first"]
    failed = _runs(effects, event_id)["fast.batch_second"]
    assert failed.status == RunStatus.PENDING
    assert failed.attempts == 1
    assert "ValueError: a handler bug" in (failed.last_error or "")
    assert failed.leased_until is None and failed.next_attempt_at is not None


def test_a_handler_out_of_attempts_is_dead(effects, cipher):
    event_id, body = _queued(cipher, fail=True)
    result = ingest(effects, body, "webhook", cipher, SCOPE, claim_lease=LEASE)
    last_chance = RetryPolicy(
        max_transient_attempts=3, max_permanent_attempts=1, base_seconds=1, cap_seconds=10
    )

    outcome = apply_claimed_runs(
        effects, _recorded(result), result.claimed_handlers, None, last_chance
    )

    assert [handler for handler, _ in outcome.dead] == ["fast.batch_second"]
    assert outcome.retries == {}
    assert _runs(effects, event_id)["fast.batch_second"].status == RunStatus.DEAD


def test_a_run_finished_meanwhile_is_not_applied_again(effects, cipher):
    event_id, body = _queued(cipher)
    result = ingest(effects, body, "webhook", cipher, SCOPE, claim_lease=LEASE)
    with effects() as session, session.begin():
        session.execute(
            update(HandlerRun)
            .where(HandlerRun.event_id == event_id, HandlerRun.handler == "fast.batch_first")
            .values(status=RunStatus.DONE)
        )

    outcome = apply_claimed_runs(effects, _recorded(result), result.claimed_handlers, None, POLICY)

    assert outcome.done == ["fast.batch_second"]
    assert _effects(effects, event_id) == ["fast.batch_second"]


def _event(cipher: PayloadCipher, **obj: Any) -> dict[str, Any]:
    _, body = _queued(cipher, **obj)
    return cipher.decrypt(body)


def test_a_first_delivery_records_applies_and_writes_its_runs_at_once(effects, cipher):
    event = _event(cipher)

    recorded, outcome, pending = record_and_apply(effects, event, "webhook", cipher, None, POLICY)

    assert recorded is not None and pending == []
    assert outcome.done == ["fast.batch_first", "fast.batch_second"]
    assert _effects(effects, event["id"]) == ["fast.batch_first", "fast.batch_second"]
    runs = _runs(effects, event["id"])
    assert {(run.status, run.attempts) for run in runs.values()} == {(RunStatus.DONE, 1)}
    assert all(run.finished_at is not None for run in runs.values())
    assert all(run.next_attempt_at is None for run in runs.values())


def test_a_first_delivery_counts_a_failing_handler_on_its_run(effects, cipher):
    event = _event(cipher, fail=True)

    _, outcome, _ = record_and_apply(effects, event, "webhook", cipher, None, POLICY)

    assert outcome.done == ["fast.batch_first"]
    assert set(outcome.retries) == {"fast.batch_second"}
    assert _effects(effects, event["id"]) == ["fast.batch_first"]
    failed = _runs(effects, event["id"])["fast.batch_second"]
    assert (failed.status, failed.attempts) == (RunStatus.PENDING, 1)
    assert "ValueError: a handler bug" in (failed.last_error or "")
    assert failed.leased_until is None and failed.finished_at is None
    # Due again after its backoff, by the database's clock.
    assert failed.next_attempt_at is not None
    due_in = (failed.next_attempt_at - failed.updated_at).total_seconds()
    assert due_in == pytest.approx(outcome.retries["fast.batch_second"].countdown, abs=0.01)


def test_a_first_delivery_whose_first_handler_fails_calls_each_handler_once(effects, cipher):
    """The first handler runs without a savepoint: its failure voids the transaction, which
    is done again with that failure noted, neither handler called a second time."""
    event = _event(cipher, fail_first=True)

    recorded, outcome, _ = record_and_apply(effects, event, "webhook", cipher, None, POLICY)

    assert recorded is not None
    assert outcome.done == ["fast.batch_second"]
    assert set(outcome.retries) == {"fast.batch_first"}
    assert _effects(effects, event["id"]) == ["fast.batch_second"]
    assert CALLS[event["id"], "fast.batch_first"] == 1
    assert CALLS[event["id"], "fast.batch_second"] == 1
    failed = _runs(effects, event["id"])["fast.batch_first"]
    assert (failed.status, failed.attempts) == (RunStatus.PENDING, 1)
    assert "ValueError: a first handler bug" in (failed.last_error or "")


def test_a_first_delivery_out_of_attempts_writes_its_run_dead_and_finished(effects, cipher):
    event = _event(cipher, fail=True)
    last_chance = RetryPolicy(
        max_transient_attempts=3, max_permanent_attempts=1, base_seconds=1, cap_seconds=10
    )

    _, outcome, _ = record_and_apply(effects, event, "webhook", cipher, None, last_chance)

    assert [handler for handler, _ in outcome.dead] == ["fast.batch_second"]
    dead = _runs(effects, event["id"])["fast.batch_second"]
    assert dead.status == RunStatus.DEAD and dead.finished_at is not None
    assert dead.next_attempt_at is None


def test_a_known_event_is_not_applied_again_and_hands_back_its_pending_runs(effects, cipher):
    event = _event(cipher, fail=True)
    record_and_apply(effects, event, "webhook", cipher, None, POLICY)

    recorded, outcome, pending = record_and_apply(effects, event, "webhook", cipher, None, POLICY)

    assert recorded is None and outcome.done == []
    assert pending == ["fast.batch_second"]
    assert _effects(effects, event["id"]) == ["fast.batch_first"]


def test_a_redelivery_counts_the_attempt_its_first_delivery_could_not_record(effects, cipher):
    """A first delivery applies its handlers inside the transaction that records the event;
    if a handler kills the worker there, that attempt is rolled back with everything else.
    The broker redelivers the message marked as such, and ingest counts it then."""
    event_id, body = _queued(cipher)

    ingest(effects, body, "webhook", cipher, SCOPE, claim_lease=LEASE, uncounted_attempts=1)

    assert {run.attempts for run in _runs(effects, event_id).values()} == {2}
