"""Retention (shared.ledger.retention): old events go with their runs, unless a run is still
owed (pending) or waits for an operator (dead), and never before Stripe forgets them."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from shared.config import ConfigError, load_settings
from shared.infra.broker import celery_settings
from shared.ledger.retention import (
    MIN_RETENTION,
    RetentionTooShort,
    count_prunable,
    horizon_for,
    prune,
)
from shared.models import CheckoutSession, HandlerRun, Payment, RunStatus, StripeEvent, WorkerCanary
from shared.task_names import PRUNE_TASK
from tests.fast.checkout_kit import checkout_session
from tests.fast.ledger_kit import ago

LOOKBACK = 3 * 24 * 3600
ENV = {
    "STRIPE_SECRET_KEY": "sk_test_" + "x" * 24,
    "STRIPE_PUBLISHABLE_KEY": "pk_test_" + "x" * 24,
    "STRIPE_WEBHOOK_SECRET": "whsec_" + "x" * 24,
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "DATABASE_URL": "postgresql://postgres@127.0.0.1/x",
    "PAYMENTS_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWtleS1vbmUtbm90LXNlY3JldC0zMmI=",
}
KEEP = dt.timedelta(days=90)
_ids = itertools.count(1)


def _event(db: sessionmaker[Session], received_days_ago: float, *run_statuses: RunStatus) -> str:
    event_id = f"evt_retention_{next(_ids)}_{dt.datetime.now().timestamp()}"
    with db.begin() as session:
        session.execute(
            insert(StripeEvent).values(
                id=event_id,
                type="payment_intent.succeeded",
                created=ago(days=received_days_ago),
                livemode=False,
                payload_encrypted="token",
                source="webhook",
                received_at=ago(days=received_days_ago),
            )
        )
        for number, status in enumerate(run_statuses):
            session.execute(
                insert(HandlerRun).values(event_id=event_id, handler=f"h{number}", status=status)
            )
    return event_id


def _kept(db: sessionmaker[Session]) -> set[str]:
    with db() as session:
        return set(session.execute(select(StripeEvent.id)).scalars())


def _runs_of(db: sessionmaker[Session], event_id: str) -> int:
    with db() as session:
        rows = session.execute(select(HandlerRun).where(HandlerRun.event_id == event_id))
        return len(rows.all())


def test_old_finished_events_go_with_their_runs_and_owed_ones_stay(db):
    finished = _event(db, 100, RunStatus.DONE, RunStatus.DONE)
    without_runs = _event(db, 100)
    pending = _event(db, 100, RunStatus.DONE, RunStatus.PENDING)
    dead = _event(db, 100, RunStatus.DEAD)
    recent = _event(db, 10, RunStatus.DONE)

    assert count_prunable(db, horizon_for(KEEP)) == 2
    result = prune(db, KEEP, LOOKBACK)

    assert result.events == 2
    assert _kept(db) >= {pending, dead, recent}
    assert not _kept(db) & {finished, without_runs}
    assert _runs_of(db, finished) == 0
    assert _runs_of(db, pending) == 2


def test_pruning_goes_on_batch_after_batch(db):
    old = {_event(db, 200, RunStatus.DONE) for _ in range(5)}

    result = prune(db, KEEP, LOOKBACK, batch=2)

    assert result.events == 5
    assert not _kept(db) & old


def test_nothing_younger_than_stripes_event_window_is_pruned(db):
    with pytest.raises(RetentionTooShort, match="31 days"):
        prune(db, dt.timedelta(days=30), LOOKBACK)
    # A reconciler that looks further back than Stripe's window raises the floor with it.
    with pytest.raises(RetentionTooShort, match="61 days"):
        prune(db, MIN_RETENTION, 60 * 24 * 3600)


def test_old_worker_check_canaries_go_too(db):
    with db.begin() as session:
        session.add(WorkerCanary(token="old-canary", queue="events", created_at=ago(days=2)))
        session.add(WorkerCanary(token="new-canary", queue="events"))

    assert prune(db, KEEP, LOOKBACK).canaries >= 1

    with db() as session:
        tokens = set(session.execute(select(WorkerCanary.token)).scalars())
    assert "new-canary" in tokens and "old-canary" not in tokens


def test_beat_prunes_on_schedule_unless_retention_is_off():
    scheduled = celery_settings(load_settings(ENV))["beat_schedule"]
    assert [entry["task"] for entry in scheduled.values()].count(PRUNE_TASK) == 1

    off = celery_settings(load_settings({**ENV, "EVENT_RETENTION_DAYS": "0"}))
    assert PRUNE_TASK not in [entry["task"] for entry in off["beat_schedule"].values()]

    with pytest.raises(ConfigError, match="EVENT_RETENTION_DAYS"):
        load_settings({**ENV, "EVENT_RETENTION_DAYS": "30"})


def _claim(db, *, hours_ago: float, intent: str | None = None, lease_in_hours=None) -> int:
    now = dt.datetime.now(dt.UTC)
    lease = None if lease_in_hours is None else now + dt.timedelta(hours=lease_in_hours)
    with db.begin() as session:
        payment = Payment(
            payment_intent_id=intent,
            amount=1000,
            currency="usd",
            status="creating" if intent is None else "succeeded",
            caller="client:shop",
            idempotency_key=f"key-{next(_ids)}",
            create_lease_until=lease,
            created_at=now - dt.timedelta(hours=hours_ago),
        )
        session.add(payment)
        session.flush()
        return payment.id


def test_claims_that_never_got_a_payment_intent_go_after_stripes_key_window(db):
    gone = _claim(db, hours_ago=26)
    recent = _claim(db, hours_ago=20)
    paid = _claim(db, hours_ago=24 * 400, intent=f"pi_kept_{next(_ids)}")
    leased = _claim(db, hours_ago=26, lease_in_hours=1)

    result = prune(db, KEEP, LOOKBACK)

    with db() as session:
        left = set(session.execute(select(Payment.id)).scalars())
    assert gone not in left
    assert {recent, paid, leased} <= left
    assert result.abandoned_claims == 1


def test_checkout_sessions_go_once_expired_before_the_horizon(db):
    now = dt.datetime.now(dt.UTC)

    def expired(days_ago: int, cancel_pending: bool = False) -> str:
        session_id = f"cs_retention_{next(_ids)}"
        with db.begin() as session:
            session.add(
                checkout_session(
                    session_id,
                    created_at=now - dt.timedelta(days=days_ago + 1),
                    expires_at=now - dt.timedelta(days=days_ago),
                    cancel_pending=cancel_pending,
                )
            )
        return session_id

    old, recent = expired(120), expired(10)
    owes_stripe = expired(120, cancel_pending=True)

    result = prune(db, KEEP, LOOKBACK)

    with db() as session:
        left = set(session.execute(select(CheckoutSession.id)).scalars())
    assert old not in left
    assert {recent, owes_stripe} <= left
    assert result.checkout_sessions == 1
