"""The event ledger called directly: recording once, runs, leases, retries, dead letters,
the sweeper, replay and the reconciler."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.ledger.event_rows import record_event, stored_payload
from shared.ledger.event_rules import EventRefused, EventScope, WebhookRejected
from shared.ledger.handlers import EventView, registry
from shared.ledger.ingest.queue_bodies import UndecryptableBody, queued_event
from shared.ledger.ingest.redelivery import ingest
from shared.ledger.recovery.dead_letters import RunFilter, list_dead, replay_dead
from shared.ledger.recovery.reconcile import reconcile
from shared.ledger.recovery.sweeper import sweep_pending
from shared.ledger.retry import RetryPolicy
from shared.ledger.runs.task import RunOutcome, execute_run, record_failure
from shared.models import HandlerRun, ReconcileCheckpoint, StripeEvent

TYPE = "fast.ledger_event"
APPLIED: list[str] = []
_ids = itertools.count(1)


@registry.handles(TYPE, name="fast.records")
def _records(session: Session, event: EventView) -> None:
    APPLIED.append(event.id)


@registry.handles(TYPE, name="fast.second")
def _second(session: Session, event: EventView) -> None:
    if event.object.get("fail") == "transient":
        raise ConnectionError("the world is briefly away")
    if event.object.get("fail") == "permanent":
        raise ValueError("a handler bug")


POLICY = RetryPolicy(
    max_transient_attempts=3, max_permanent_attempts=2, base_seconds=1, cap_seconds=10
)
SCOPE = EventScope(livemode=False, connected_accounts=())


def event(**obj: Any) -> dict[str, Any]:
    return {
        "id": f"evt_fast_{next(_ids)}_{dt.datetime.now().timestamp()}",
        "object": "event",
        "type": TYPE,
        "created": 1_700_000_000,
        "livemode": False,
        "data": {"object": {"id": "obj_1", **obj}},
    }


def runs(db, event_id: str) -> dict[str, HandlerRun]:
    with db() as session:
        rows = session.execute(select(HandlerRun).where(HandlerRun.event_id == event_id))
        return {run.handler: run for run in rows.scalars()}


def recorded(db, cipher, evt: dict[str, Any]) -> None:
    with db.begin() as session:
        assert record_event(session, evt, "webhook", cipher)


def test_an_event_is_recorded_once_with_one_run_per_handler(db, cipher):
    evt = event()
    first = ingest(db, cipher.encrypt(evt), "webhook", cipher, SCOPE)
    second = ingest(db, cipher.encrypt(evt), "webhook", cipher, SCOPE)

    assert first.newly_recorded and not second.newly_recorded
    assert first.pending_handlers == second.pending_handlers == ["fast.records", "fast.second"]
    assert set(runs(db, evt["id"])) == {"fast.records", "fast.second"}


def test_the_stored_event_is_encrypted_and_reads_back(db, cipher):
    evt = event(secret_note="customer data")
    recorded(db, cipher, evt)
    with db() as session:
        row = session.get(StripeEvent, evt["id"])
        assert row is not None
        assert row.payload is None and "customer data" not in (row.payload_encrypted or "")
        assert stored_payload(row, cipher)["data"]["object"]["secret_note"] == "customer data"


def test_queued_bodies_must_be_ours(cipher):
    from shared.infra.crypto import PayloadCipher

    with pytest.raises(WebhookRejected):
        queued_event('{"id": "evt_x", "type": "t"}', cipher)
    other = PayloadCipher(("b3RoZXIta2V5LW5vdC1hLXNlY3JldC0zMmJ5dGVzISE=",))
    with pytest.raises(UndecryptableBody):
        queued_event(other.encrypt(event()), cipher)


def test_events_out_of_scope_are_refused_before_recording(db, cipher):
    live = {**event(), "livemode": True}
    foreign = {**event(), "account": "acct_not_ours"}
    for evt in (live, foreign):
        with pytest.raises(EventRefused):
            ingest(db, cipher.encrypt(evt), "webhook", cipher, SCOPE)
        with db() as session:
            assert session.get(StripeEvent, evt["id"]) is None


def test_a_run_is_applied_once_and_then_left_alone(db, cipher):
    evt = event()
    recorded(db, cipher, evt)

    first = execute_run(db, evt["id"], "fast.records", cipher, policy=POLICY)
    again = execute_run(db, evt["id"], "fast.records", cipher, policy=POLICY)

    assert (first, again) == (RunOutcome.DONE, RunOutcome.ALREADY_FINISHED)
    assert APPLIED.count(evt["id"]) == 1
    run = runs(db, evt["id"])["fast.records"]
    assert (run.status, run.attempts, run.leased_until) == ("done", 1, None)


def test_a_leased_run_is_left_to_its_holder_until_the_lease_ends(db, cipher):
    evt = event()
    recorded(db, cipher, evt)
    with db.begin() as session:
        session.execute(
            update(HandlerRun)
            .where(HandlerRun.event_id == evt["id"])
            .values(leased_until=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5), attempts=1)
        )
    assert execute_run(db, evt["id"], "fast.records", cipher, policy=POLICY) is RunOutcome.LEASED

    with db.begin() as session:
        session.execute(
            update(HandlerRun)
            .where(HandlerRun.event_id == evt["id"])
            .values(leased_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    assert execute_run(db, evt["id"], "fast.records", cipher, policy=POLICY) is RunOutcome.DONE


def test_a_run_whose_worker_died_on_every_attempt_is_dead(db, cipher):
    evt = event()
    recorded(db, cipher, evt)
    with db.begin() as session:
        session.execute(
            update(HandlerRun)
            .where(HandlerRun.event_id == evt["id"], HandlerRun.handler == "fast.records")
            .values(attempts=POLICY.max_transient_attempts)
        )
    outcome = execute_run(db, evt["id"], "fast.records", cipher, policy=POLICY)
    assert outcome is RunOutcome.DEAD
    assert runs(db, evt["id"])["fast.records"].status == "dead"
    assert evt["id"] not in APPLIED


def test_a_missing_run_is_reported(db, cipher):
    assert execute_run(db, "evt_nope", "fast.records", cipher, policy=POLICY) is RunOutcome.MISSING


@pytest.mark.parametrize(("kind", "limit"), [("transient", 3), ("permanent", 2)])
def test_failures_retry_with_backoff_then_dead_letter(db, cipher, kind, limit):
    evt = event(fail=kind)
    recorded(db, cipher, evt)
    failures = []
    for _ in range(limit):
        with pytest.raises((ConnectionError, ValueError)) as caught:
            execute_run(db, evt["id"], "fast.second", cipher, policy=POLICY)
        failures.append(record_failure(db, evt["id"], "fast.second", caught.value, POLICY))

    assert [f.dead for f in failures] == [False] * (limit - 1) + [True]
    assert all(f.transient == (kind == "transient") for f in failures)
    assert all(0 <= f.countdown <= POLICY.cap_seconds for f in failures)
    dead = list_dead(db, RunFilter(handler="fast.second"))
    assert [row.event_id for row in dead] == [evt["id"]]
    # One handler's failure never holds back the other's.
    assert runs(db, evt["id"])["fast.records"].status == "pending"
    assert execute_run(db, evt["id"], "fast.records", cipher, policy=POLICY) is RunOutcome.DONE


def test_a_dead_run_replays_to_pending_and_runs_again(db, cipher):
    evt = event(fail="permanent")
    recorded(db, cipher, evt)
    with db.begin() as session:
        session.execute(
            update(HandlerRun)
            .where(HandlerRun.event_id == evt["id"], HandlerRun.handler == "fast.second")
            .values(status="dead", attempts=2)
        )
    enqueued: list[tuple[str, str]] = []

    replayed = replay_dead(
        db, run_ids=[f"{evt['id']}/fast.second"], enqueue=lambda e, h: enqueued.append((e, h))
    )

    run = runs(db, evt["id"])["fast.second"]
    assert enqueued == [(evt["id"], "fast.second")]
    assert (run.status, run.attempts, run.replays) == ("pending", 0, 1)
    assert replayed


def test_the_sweeper_resends_only_runs_nobody_touched(db, cipher):
    stale, fresh = event(), event()
    recorded(db, cipher, stale)
    recorded(db, cipher, fresh)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with db.begin() as session:
        session.execute(
            update(HandlerRun)
            .where(HandlerRun.event_id == stale["id"])
            .values(updated_at=long_ago, created_at=long_ago)
        )

    swept = sweep_pending(db, older_than_seconds=300)

    assert sorted(swept) == [(stale["id"], "fast.records"), (stale["id"], "fast.second")]


class ListedEvents:
    """Stripe's event list, as the reconciler reads it."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def events_since(self, created_gte: int):
        return [e for e in self.events if e["created"] >= created_gte]


def test_the_reconciler_records_what_webhooks_lost_and_moves_its_checkpoint(db, cipher):
    now = 1_700_000_600.0
    known, lost = event(), {**event(), "created": 1_700_000_100}
    recorded(db, cipher, known)

    result = reconcile(
        db,
        ListedEvents([known, lost]),
        overlap_seconds=60,
        lookback_seconds=3600,
        cipher=cipher,
        scope=SCOPE,
        now=lambda: now,
    )

    assert result.recovered == 1
    assert sorted(result.pending_runs) == [
        (lost["id"], "fast.records"),
        (lost["id"], "fast.second"),
    ]
    with db() as session:
        assert session.get(StripeEvent, lost["id"]) is not None
        checkpoint = session.execute(select(ReconcileCheckpoint)).scalar_one()
    assert checkpoint.last_event_created == dt.datetime.fromtimestamp(1_700_000_100, dt.UTC)


def test_the_reconciler_never_moves_past_an_event_it_could_not_record(db, cipher):
    unrecordable = {**event(), "type": "x" * 300, "created": 1_700_000_050}
    later = {**event(), "created": 1_700_000_200}

    reconcile(
        db,
        ListedEvents([unrecordable, later]),
        overlap_seconds=60,
        lookback_seconds=3600,
        cipher=cipher,
        scope=SCOPE,
        now=lambda: 1_700_000_600.0,
    )

    with db() as session:
        checkpoint = session.execute(select(ReconcileCheckpoint)).scalar_one_or_none()
    assert checkpoint is None or checkpoint.last_event_created < dt.datetime.fromtimestamp(
        1_700_000_050, dt.UTC
    )
