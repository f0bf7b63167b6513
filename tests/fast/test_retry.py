"""The retry policy's decisions, and the run step the Celery task translates."""

from __future__ import annotations

from dataclasses import replace

from shared.config import load_settings
from shared.ledger.retry import GiveUp, Retry, RetryPolicy
from shared.ledger.runs.task import DatabaseUnavailable, run_handler_once
from tests.fast.test_ledger import POLICY, event, recorded, runs

HIGHEST = replace(POLICY, jitter=lambda low, high: high)


def test_backoff_doubles_up_to_the_cap_with_full_jitter():
    assert [HIGHEST.countdown(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]
    assert replace(POLICY, jitter=lambda low, high: low).countdown(4) == 0


def test_transient_failures_get_more_attempts_than_permanent_ones():
    transient, permanent = ConnectionError("away"), ValueError("bug")
    assert HIGHEST.after_failure(2, transient) == Retry(2)
    assert isinstance(HIGHEST.after_failure(3, transient), GiveUp)
    assert isinstance(HIGHEST.after_failure(2, permanent), GiveUp)


def test_ingest_retries_transient_failures_for_ever_and_quickly():
    slow = replace(HIGHEST, cap_seconds=900)
    assert slow.after_ingest_failure(50, ConnectionError("away")) == Retry(30)
    assert isinstance(slow.after_ingest_failure(2, ValueError("bug")), GiveUp)


def test_the_policy_comes_from_the_settings_in_one_place():
    env = {
        "STRIPE_SECRET_KEY": "sk_test_" + "x" * 24,
        "STRIPE_PUBLISHABLE_KEY": "pk_test_" + "x" * 24,
        "STRIPE_WEBHOOK_SECRET": "whsec_" + "x" * 24,
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1/x",
        "PAYMENTS_ENCRYPTION_KEYS": "dGVzdC1vbmx5LWtleS1vbmUtbm90LXNlY3JldC0zMmI=",
        "HANDLER_TIME_LIMIT_SECONDS": "60",
        "BROKER_VISIBILITY_TIMEOUT": "400",
        "HANDLER_MAX_ATTEMPTS": "5",
    }
    policy = RetryPolicy.from_settings(load_settings(env))
    assert policy.lease_seconds == 65
    assert policy.soft_time_limit_seconds == 50
    assert policy.cap_seconds == 100
    assert policy.max_transient_attempts == 5


def test_the_run_step_says_when_to_retry_and_when_it_is_over(db, cipher):
    evt = event(fail="transient")
    recorded(db, cipher, evt)

    first = run_handler_once(db, evt["id"], "fast.second", cipher, None, HIGHEST)
    done = run_handler_once(db, evt["id"], "fast.records", cipher, None, HIGHEST)
    again = run_handler_once(db, evt["id"], "fast.second", cipher, None, HIGHEST)
    last = run_handler_once(db, evt["id"], "fast.second", cipher, None, HIGHEST)

    assert (first, done, again, last) == (Retry(1), None, Retry(2), None)
    assert runs(db, evt["id"])["fast.second"].status == "dead"


def test_a_database_that_cannot_record_the_failure_still_means_retry(cipher):
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from devtools.processes import free_port

    down = sessionmaker(create_engine(f"postgresql+psycopg2://x@127.0.0.1:{free_port()}/x"))
    step = run_handler_once(down, "evt_x", "fast.records", cipher, None, HIGHEST)
    assert isinstance(step, DatabaseUnavailable)
