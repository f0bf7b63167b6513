"""First deliveries ingested many at once (shared.ledger.ingest.first_delivery.ingest_batch): one
transaction for the batch, every promise of one event kept per event, and what a batch cannot
settle handed back to run alone."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
from typing import Any

import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy import create_engine, delete, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from shared.db import make_engine, make_session_factory
from shared.infra.crypto import PayloadCipher, generate_key
from shared.ledger.event_rules import EventScope
from shared.ledger.handlers import EventView, registry
from shared.ledger.ingest import first_delivery
from shared.ledger.ingest.first_delivery import (
    MAX_SAVEPOINTS,
    ingest_batch,
    record_and_apply,
    transactions_of,
)
from shared.ledger.ingest.queue_bodies import QueuedDelivery, QueuedEvent, queued_deliveries
from shared.ledger.retry import RetryPolicy
from shared.models import HandlerRun, RunStatus, StripeEvent

TYPE = "fast.many_event"
FIRST, SECOND = "fast.many_first", "fast.many_second"
POLICY = RetryPolicy(
    max_transient_attempts=3, max_permanent_attempts=2, base_seconds=1, cap_seconds=10
)
SCOPE = EventScope(livemode=False, connected_accounts=())
_ids = itertools.count(1)
# Calls by (event, handler), kept outside the database: a rolled-back call leaves no row.
CALLS: collections.Counter[tuple[str, str]] = collections.Counter()


def _handler(name: str, fails_on: str) -> None:
    @registry.handles(TYPE, name=name)
    def handle(session: Session, event: EventView) -> None:
        CALLS[event.id, name] += 1
        session.execute(
            text("INSERT INTO many_effects VALUES (:event, :handler)"),
            {"event": event.id, "handler": name},
        )
        if event.object.get(fails_on):
            raise ValueError(f"{name} cannot read this event")


_handler(FIRST, "fail_first")
_handler(SECOND, "fail_second")


@pytest.fixture
def effects(db: sessionmaker[Session]) -> sessionmaker[Session]:
    with db() as session, session.begin():
        session.execute(text("CREATE TEMP TABLE many_effects (event_id text, handler text)"))
    return db


def _delivery(cipher: PayloadCipher, object_id: str = "obj", **obj: Any) -> QueuedDelivery:
    """A queued delivery of a new event; events sort by object id within a batch."""
    number = next(_ids)
    event = {
        "id": f"evt_many_{number}_{dt.datetime.now().timestamp()}",
        "object": "event",
        "type": TYPE,
        "created": 1_700_000_000,
        "livemode": False,
        "data": {"object": {"id": object_id, **obj}},
    }
    return QueuedDelivery(f"task-{number}", cipher.encrypt(event), "webhook")


def _event_id(delivery: QueuedDelivery, cipher: PayloadCipher) -> str:
    return str(cipher.decrypt(delivery.body)["id"])


def _runs(db: sessionmaker[Session], event_id: str) -> dict[str, tuple[str, int]]:
    with db() as session:
        rows = session.execute(select(HandlerRun).where(HandlerRun.event_id == event_id))
        return {run.handler: (run.status, run.attempts) for run in rows.scalars()}


def _effects(db: sessionmaker[Session], event_id: str) -> list[str]:
    with db() as session:
        query = text("SELECT handler FROM many_effects WHERE event_id = :e ORDER BY handler")
        return list(session.execute(query, {"e": event_id}).scalars())


def _transactions(db: sessionmaker[Session], event_ids: list[str]) -> int:
    """How many transactions wrote these events' rows (rows one transaction wrote share xmin)."""
    with db() as session:
        query = text("SELECT count(DISTINCT xmin::text) FROM stripe_events WHERE id = ANY(:ids)")
        return int(session.execute(query, {"ids": event_ids}).scalar_one())


def test_a_batch_records_and_applies_every_event_in_one_transaction(effects, cipher):
    deliveries = [_delivery(cipher, f"obj_{n}") for n in range(5)]
    ids = [_event_id(d, cipher) for d in deliveries]

    result = ingest_batch(effects, deliveries, cipher, SCOPE, None, POLICY)

    assert result.alone == []
    assert set(result.settled) == {d.key for d in deliveries}
    assert all(s.result.newly_recorded and s.retries == {} for s in result.settled.values())
    for event_id in ids:
        assert _effects(effects, event_id) == [FIRST, SECOND]
        assert _runs(effects, event_id) == {FIRST: ("done", 1), SECOND: ("done", 1)}
    assert _transactions(effects, ids) == 1


def test_a_failing_handler_is_counted_on_its_run_and_no_handler_is_called_twice(effects, cipher):
    deliveries = [
        _delivery(cipher, "obj_a"),
        _delivery(cipher, "obj_b", fail_second=True),
        _delivery(cipher, "obj_c"),
    ]
    ids = [_event_id(d, cipher) for d in deliveries]

    result = ingest_batch(effects, deliveries, cipher, SCOPE, None, POLICY)

    assert result.alone == []
    failed = result.settled[deliveries[1].key]
    assert set(failed.retries) == {SECOND}
    assert _runs(effects, ids[1])[SECOND] == (RunStatus.PENDING, 1)
    # The failing handler's write went with its savepoint; everything else committed.
    assert _effects(effects, ids[1]) == [FIRST]
    assert _effects(effects, ids[0]) == _effects(effects, ids[2]) == [FIRST, SECOND]
    assert all(CALLS[event_id, name] == 1 for event_id in ids for name in (FIRST, SECOND))


def test_the_first_handler_failing_voids_the_try_and_calls_no_handler_twice(effects, cipher):
    """The batch's first handler call runs without a savepoint: its failure rolls back the
    whole transaction, which is done again with that failure noted on its run."""
    deliveries = [_delivery(cipher, "obj_a", fail_first=True), _delivery(cipher, "obj_b")]
    ids = [_event_id(d, cipher) for d in deliveries]

    result = ingest_batch(effects, deliveries, cipher, SCOPE, None, POLICY)

    assert set(result.settled[deliveries[0].key].retries) == {FIRST}
    assert _runs(effects, ids[0]) == {FIRST: (RunStatus.PENDING, 1), SECOND: ("done", 1)}
    assert _effects(effects, ids[1]) == [FIRST, SECOND]
    assert all(CALLS[event_id, name] == 1 for event_id in ids for name in (FIRST, SECOND))


def test_two_deliveries_of_one_event_in_a_batch_apply_it_once(effects, cipher):
    delivery = _delivery(cipher)
    again = QueuedDelivery("task-again", delivery.body, "webhook")
    event_id = _event_id(delivery, cipher)

    result = ingest_batch(effects, [delivery, again], cipher, SCOPE, None, POLICY)

    assert result.settled[delivery.key].result.newly_recorded
    duplicate = result.settled[again.key].result
    assert (duplicate.newly_recorded, duplicate.pending_handlers) == (False, [])
    assert _effects(effects, event_id) == [FIRST, SECOND]


def test_a_known_event_in_a_batch_hands_back_its_pending_runs(effects, cipher):
    delivery = _delivery(cipher, fail_second=True)
    event_id = _event_id(delivery, cipher)
    record_and_apply(effects, cipher.decrypt(delivery.body), "webhook", cipher, None, POLICY)

    result = ingest_batch(effects, [delivery, _delivery(cipher)], cipher, SCOPE, None, POLICY)

    known = result.settled[delivery.key].result
    assert (known.newly_recorded, known.pending_handlers) == (False, [SECOND])
    assert CALLS[event_id, FIRST] == 1


def test_what_a_batch_cannot_read_runs_alone_and_the_rest_is_settled(effects, cipher):
    good = _delivery(cipher)
    plain = QueuedDelivery("task-plain", '{"id": "evt_forged", "type": "x"}', "webhook")
    foreign = QueuedDelivery(
        "task-foreign", PayloadCipher((generate_key(),)).encrypt({}), "webhook"
    )

    result = ingest_batch(effects, [plain, good, foreign], cipher, SCOPE, None, POLICY)

    assert sorted(result.alone) == ["task-foreign", "task-plain"]
    assert list(result.settled) == [good.key]


def test_a_batch_whose_transaction_fails_runs_every_delivery_alone(cipher):
    nowhere = sessionmaker(create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none"))
    deliveries = [_delivery(cipher), _delivery(cipher)]

    result = ingest_batch(nowhere, deliveries, cipher, SCOPE, None, POLICY)

    assert result.settled == {}
    assert sorted(result.alone) == sorted(d.key for d in deliveries)


def test_a_large_batch_is_cut_so_no_transaction_overflows_postgres_subtransactions(effects, cipher):
    deliveries = [_delivery(cipher, f"obj_{n:03}") for n in range(70)]
    ids = [_event_id(d, cipher) for d in deliveries]

    result = ingest_batch(effects, deliveries, cipher, SCOPE, None, POLICY)

    assert len(result.settled) == 70
    # Two handlers each: at most MAX_SAVEPOINTS // 2 events per transaction.
    per_transaction = MAX_SAVEPOINTS // 2
    assert _transactions(effects, ids) == -(-70 // per_transaction)
    with effects() as session:
        count = select(StripeEvent.id).where(StripeEvent.id.in_(ids))
        assert len(session.execute(count).all()) == 70


def test_past_its_deadline_a_batch_starts_no_transaction_and_hands_the_rest_back(effects, cipher):
    deliveries = [_delivery(cipher), _delivery(cipher)]

    result = ingest_batch(effects, deliveries, cipher, SCOPE, None, POLICY, deadline=0.0)

    assert result.settled == {}
    assert sorted(result.alone) == sorted(d.key for d in deliveries)


def test_a_metrics_failure_after_the_commit_leaves_the_batch_settled(effects, cipher, monkeypatch):
    def broken_metrics(*_: Any) -> None:
        raise RuntimeError("metrics directory gone")

    monkeypatch.setattr(first_delivery, "report_outcome", broken_metrics)
    deliveries = [_delivery(cipher), _delivery(cipher)]

    result = ingest_batch(effects, deliveries, cipher, SCOPE, None, POLICY)

    # Committed: running them again as tasks would only find them known.
    assert result.alone == []
    assert set(result.settled) == {d.key for d in deliveries}


def test_transactions_of_keeps_an_event_whole_and_in_order():
    events = [QueuedEvent({"id": f"evt_{n}", "type": TYPE}, "webhook", [str(n)]) for n in range(65)]

    chunks = list(transactions_of(events, registry))

    assert [len(chunk) for chunk in chunks] == [30, 30, 5]
    assert [event for chunk in chunks for event in chunk] == events


def test_queued_ingest_tasks_become_deliveries_or_run_alone():
    items: list[tuple[str, list[Any], dict[str, Any]]] = [
        ("a", ["token-a"], {}),
        ("b", [], {"body": "token-b", "source": "reconciler"}),
        ("c", ["token-c", "replay", 1.5], {}),
        ("d", [], {}),
        ("e", [{"not": "a body"}], {}),
    ]

    deliveries, alone = queued_deliveries(items)

    assert deliveries == [
        QueuedDelivery("a", "token-a", "webhook"),
        QueuedDelivery("b", "token-b", "reconciler"),
        QueuedDelivery("c", "token-c", "replay"),
    ]
    assert alone == ["d", "e"]


def test_a_time_limit_met_as_a_savepoint_is_released_commits_nothing(fast_engine, cipher):
    """Celery's soft time limit is an exception raised wherever the process is. Met just after a
    handler's savepoint was released (its effect kept), it is not that handler's failure: were
    it counted as one, the batch would commit the effect with a retry due, and the retry would
    apply it again. The whole transaction goes instead, and the event runs alone.

    On real transactions (the savepoint fixture cannot roll back around a released savepoint),
    one pooled connection, so the handlers' temporary table is there for every session."""
    engine = make_engine(fast_engine.url.render_as_string(False), pool_size=1, max_overflow=0)
    sessions = make_session_factory(engine)
    delivery = _delivery(cipher)
    event_id = _event_id(delivery, cipher)
    met: list[str] = []

    def time_limit_after_release(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # FIRST runs without a savepoint; SECOND's is the first one released.
        if statement.startswith("RELEASE SAVEPOINT") and CALLS[event_id, SECOND] and not met:
            met.append(statement)
            raise SoftTimeLimitExceeded()

    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TEMP TABLE many_effects (event_id text, handler text)"))
        event.listen(engine, "after_cursor_execute", time_limit_after_release)
        result = ingest_batch(sessions, [delivery], cipher, SCOPE, None, POLICY)
        committed = (_effects(sessions, event_id), _runs(sessions, event_id))
    finally:
        with engine.begin() as conn:  # should the change be undone, leave no rows behind
            conn.execute(delete(StripeEvent).where(StripeEvent.id == event_id))
        engine.dispose()

    assert met
    assert result.alone == [delivery.key]
    assert committed == ([], {})
