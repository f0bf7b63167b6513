"""Retention as operators and beat run it: `payments events prune` and the scheduled task, on
the real database and the session's worker."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, sessionmaker

from devtools.processes import REPO_ROOT, run_payments, wait_until
from shared.infra.broker import make_producer
from shared.models import HandlerRun, RunStatus, StripeEvent
from shared.task_names import PRUNE_TASK


@pytest.fixture
def old_events(sessions: sessionmaker[Session]) -> Iterator[list[str]]:
    """The ids of the rows a test makes; whatever prune left is deleted after it. Their payload
    is no token any key decrypts: left behind, it would fail a later test on this database that
    reads every stored event (key rotation)."""
    made: list[str] = []
    yield made
    with sessions.begin() as session:
        session.execute(delete(HandlerRun).where(HandlerRun.event_id.in_(made)))
        session.execute(delete(StripeEvent).where(StripeEvent.id.in_(made)))


def _old_event(
    sessions: sessionmaker[Session], days: int, status: RunStatus, made: list[str]
) -> str:
    event_id = f"evt_old_{uuid.uuid4().hex[:16]}"
    made.append(event_id)
    received = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    with sessions.begin() as session:
        session.execute(
            insert(StripeEvent).values(
                id=event_id,
                type="test.retention_old",
                created=received,
                livemode=False,
                payload_encrypted="token",
                source="webhook",
                received_at=received,
            )
        )
        session.execute(insert(HandlerRun).values(event_id=event_id, handler="h", status=status))
    return event_id


def _exists(sessions: sessionmaker[Session], event_id: str) -> bool:
    with sessions() as session:
        found = session.execute(select(StripeEvent.id).where(StripeEvent.id == event_id))
        return found.first() is not None


def test_the_prune_command_refuses_too_short_counts_then_prunes(
    base_env, sessions, database, old_events
):
    env = {**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT)}
    done = _old_event(sessions, 400, RunStatus.DONE, old_events)
    dead = _old_event(sessions, 400, RunStatus.DEAD, old_events)

    refused = run_payments("events", "prune", "--older-than", "7", env=env)
    assert refused.returncode != 0 and "younger than 31 days" in refused.stderr

    dry = run_payments("events", "prune", "--older-than", "365", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would be pruned" in dry.stdout and _exists(sessions, done)

    pruned = run_payments("events", "prune", "--older-than", "365", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert "pruned" in pruned.stdout
    assert not _exists(sessions, done)
    assert _exists(sessions, dead)


def test_the_scheduled_task_prunes_through_the_worker(settings, sessions, worker, old_events):
    old = _old_event(sessions, 400, RunStatus.DONE, old_events)
    producer = make_producer(settings)
    try:
        producer.send_task(PRUNE_TASK)
        wait_until(lambda: not _exists(sessions, old), 30, "the old event pruned", interval=0.2)
    finally:
        producer.close()
