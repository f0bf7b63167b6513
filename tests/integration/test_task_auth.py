"""Every task body on the broker is authenticated (issue 23, item 5): the session's worker runs
a canary, a handler run, a sweep, a reconcile or a prune only when its message carries the
signature of a holder of PAYMENTS_ENCRYPTION_KEYS; anyone else's is acknowledged, not run, and
counted. Against the real worker and broker."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import replace

import pytest
from celery import Celery
from sqlalchemy import select

from devtools.processes import REPO_ROOT
from shared.infra.broker import celery_settings, make_producer
from shared.models import WorkerCanary
from shared.task_names import CANARY_TASK
from tests.conftest import NEXT_ENCRYPTION_KEY
from tests.integration.test_event_trust import SESSION_WORKER_METRICS, metric


def refused(task: str) -> float:
    return metric(SESSION_WORKER_METRICS, "tasks_refused_total", task=task)


def canary_row(sessions) -> str:
    token = secrets.token_hex(16)
    with sessions.begin() as session:
        session.add(WorkerCanary(token=token, queue="events"))
    return token


def seen(sessions, token: str) -> bool:
    with sessions() as session:
        row = session.execute(select(WorkerCanary).where(WorkerCanary.token == token)).scalar_one()
        return row.seen_at is not None


def unsigned_producer(settings) -> Celery:
    """Celery as anyone who can write to the broker would use it: no key of ours."""
    app = Celery("someone-else", set_as_current=False)
    app.conf.update(celery_settings(settings))
    return app


@pytest.mark.parametrize("sender", ["unsigned", "signed with a key we do not hold"])
def test_a_task_without_our_signature_is_not_run_and_is_counted(
    settings, sessions, worker, settle, sender
):
    producer = (
        unsigned_producer(settings)
        if sender == "unsigned"
        else make_producer(replace(settings, encryption_keys=(NEXT_ENCRYPTION_KEY,)))
    )
    forged, genuine = canary_row(sessions), canary_row(sessions)
    before = refused(CANARY_TASK)

    producer.send_task(CANARY_TASK, args=[forged], queue="events")
    ours = make_producer(settings)
    ours.send_task(CANARY_TASK, args=[genuine], queue="events")
    # Both taken: settle's own canaries ran, behind them on the same queue.
    settle()
    producer.close()
    ours.close()

    assert seen(sessions, genuine)
    assert not seen(sessions, forged)
    assert refused(CANARY_TASK) == before + 1


CHECK = """
from shared.infra.task_auth import AuthenticatedTask
from workers.celery_app import app
app.loader.import_default_modules()
ours = {n: t for n, t in app.tasks.items() if n.startswith("payments.")}
print(len(ours), all(isinstance(t, AuthenticatedTask) for t in ours.values()))
"""


def test_every_task_of_the_worker_checks_its_body(base_env):
    # In a process of its own: the worker's app reads its configuration from the environment.
    env = {**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT)}
    checked = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    count, all_checked = checked.stdout.split()
    assert int(count) >= 6 and all_checked == "True"
