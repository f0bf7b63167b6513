"""A handler on a queue of its own (@registry.handles(..., queue=...)) runs on its own worker,
after its event is recorded: one stuck for 30 s leaves the ledger's handlers of the same
events at their usual latency, instead of holding every event of its batch for 30 s."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
import redis
from sqlalchemy import text

from devtools import stripe_events
from devtools.processes import ARTIFACTS, REPO_ROOT, Process, venv_script, wait_until
from shared.config import load_settings
from shared.infra.broker import make_producer
from shared.infra.crypto import PayloadCipher
from shared.ledger.receive.publisher import EventPublisher
from tests.conftest import REDIS_HOST

# A broker database of this module's own: the session worker, which does not know these
# handlers, never takes these events.
OWN_REDIS_DB = 9
EVENTS = 20
# The ledger handler's run seen done within this of its event's publish, for every event
# (make bench's pipeline p99 is tens of milliseconds; inline, the stuck handler would hold
# each batch for 30 s).
LEDGER_P100_SECONDS = 3.0


@contextmanager
def own_workers(base_env: dict[str, str]) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        **base_env,
        "PYTHONPATH": str(REPO_ROOT),
        "REDIS_URL": f"{REDIS_HOST}/{OWN_REDIS_DB}",
        "HANDLER_MODULES": "tests.support.stuck_handlers",
        "HANDLER_QUEUES": "tests-slow",
    }
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    producer = make_producer(load_settings(env))
    with ExitStack() as stack:
        stack.callback(producer.close)
        for label, queues in (("ledger", "events,handlers"), ("slow", "tests-slow")):
            node = f"queues-{label}-{os.getpid()}@{socket.gethostname()}"
            args = [venv_script("celery"), "-A", "workers.celery_app", "worker", "-Q", queues]
            args += ["--concurrency", "2", "--loglevel", "INFO", "--hostname", node]
            (ARTIFACTS / f"prometheus-queues-{label}").mkdir(parents=True, exist_ok=True)
            own = {**env, "PROMETHEUS_MULTIPROC_DIR": str(ARTIFACTS / f"prometheus-queues-{label}")}
            worker = Process(f"handler-queues-{label}", args, own)
            # The slow worker is inside a 30 s handler at the end: no waiting for it to finish.
            stack.callback(worker.kill_group if label == "slow" else worker.stop)

            def answering(node: str = node, worker: Process = worker) -> bool:
                return not worker.alive() or bool(producer.control.ping([node], timeout=0.5))

            wait_until(answering, 60, f"the {label} worker")
            assert worker.alive(), worker.output()
        yield env


def ledger_done(sessions, ids: list[str]) -> set[str]:
    with sessions() as session:
        rows = session.execute(
            text(
                "SELECT event_id FROM handler_runs WHERE event_id = ANY(:ids) "
                "AND handler = 'tests.stuck_beside' AND status = 'done'"
            ),
            {"ids": ids},
        ).scalars()
        return set(rows)


def stuck_runs_taken(sessions, ids: list[str]) -> int:
    """Runs of the stuck handler a worker has taken (an attempt counted, the run leased)."""
    with sessions() as session:
        return int(
            session.execute(
                text(
                    "SELECT count(*) FROM handler_runs WHERE event_id = ANY(:ids) "
                    "AND handler = 'tests.stuck' AND attempts >= 1"
                ),
                {"ids": ids},
            ).scalar_one()
        )


@pytest.mark.long
def test_a_stuck_handler_on_its_own_queue_leaves_the_ledger_handlers_at_their_latency(
    base_env, sessions, settings
):
    with own_workers(base_env) as env:
        publisher = EventPublisher(make_producer(load_settings(env)))
        cipher = PayloadCipher(settings.encryption_keys)
        published: dict[str, float] = {}
        for _ in range(EVENTS):
            event = stripe_events.event(
                "test.stuck", {"id": stripe_events.new_id("obj"), "object": "test"}
            )
            publisher.publish(event, "webhook", cipher)
            published[event["id"]] = time.monotonic()
            time.sleep(0.05)  # pacing a steady stream, not waiting for anything
        ids = list(published)
        # Each event's ledger run seen done: the first poll that finds it (every 50 ms).
        seen: dict[str, float] = {}

        def all_done() -> bool:
            now = time.monotonic()
            for event_id in ledger_done(sessions, ids) - set(seen):
                seen[event_id] = now - published[event_id]
            return len(seen) == EVENTS

        wait_until(all_done, 30, "the ledger's runs done", interval=0.05)
        slowest = max(seen.values())
        print(f"ledger handler, published to seen done: slowest {slowest:.3f} s of {EVENTS}")
        assert slowest < LEDGER_P100_SECONDS, sorted(seen.values())
        # Meanwhile the stuck handler's runs wait on their own queue, where its own worker has
        # taken them (two at a time, each for 30 s).
        wait_until(
            lambda: stuck_runs_taken(sessions, ids) >= 1, 30, "the slow worker taking a stuck run"
        )
        assert stuck_runs_taken(sessions, ids) < EVENTS
