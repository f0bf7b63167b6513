"""A process on another broker is caught, not left to stall in silence: workers note the broker
they consume from; `payments worker-check` names a worker on another broker and `/readyz` fails
when workers are alive but none consumes from the web process's broker."""

from __future__ import annotations

import os
from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from devtools.processes import REPO_ROOT, run_payments, wait_until
from shared.config import Settings
from shared.models import WorkerBroker
from shared.observability.worker_brokers import broker_label
from tests.conftest import QUIET_REDIS_DB, REDIS_HOST

NOWHERE = f"{REDIS_HOST}/{QUIET_REDIS_DB}"


def _noted(sessions: sessionmaker[Session]) -> dict[str, str]:
    with sessions() as session:
        rows = session.execute(select(WorkerBroker.hostname, WorkerBroker.broker)).all()
    return {host: broker for host, broker in rows}


def test_a_broker_label_never_carries_credentials():
    assert broker_label("redis://:s3cret@cache.internal:6380/2") == "redis://cache.internal:6380/2"
    assert broker_label("amqp://user:pw@mq//") == "amqp://mq//"


def test_the_session_worker_notes_its_broker(settings: Settings, sessions, worker):
    wait_until(
        lambda: broker_label(settings.broker) in _noted(sessions).values(),
        30,
        "the worker's broker noted",
        interval=0.2,
    )


def test_readiness_fails_when_no_live_worker_consumes_our_broker(
    settings: Settings, sessions, worker
):
    wait_until(lambda: bool(_noted(sessions)), 30, "a worker noted", interval=0.2)
    ours = create_app(settings).test_client().get("/readyz")
    assert ours.status_code == 200, ours.json

    # A web process configured with a broker no worker consumes from.
    stray = create_app(replace(settings, broker_url=NOWHERE)).test_client().get("/readyz")

    assert stray.status_code == 503
    assert (stray.json or {})["failed"] == ["workers_on_this_broker"]


def test_worker_check_names_a_worker_on_another_broker(base_env, settings, sessions, worker):
    wait_until(lambda: bool(_noted(sessions)), 30, "a worker noted", interval=0.2)
    env = {**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT), "BROKER_URL": NOWHERE}

    checked = run_payments("worker-check", "--timeout", "2", env=env)

    assert checked.returncode == 1
    assert f"ON ANOTHER BROKER: {broker_label(settings.broker)}" in checked.stdout
