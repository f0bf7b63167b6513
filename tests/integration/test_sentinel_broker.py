"""Redis behind Sentinel as the broker: when the master dies, Sentinel promotes its replica and
the web process and the worker carry on with the new master by themselves.

The test starts its own master, replica and sentinel on spare ports and SIGKILLs its own master.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from devtools import stripe_events
from devtools.processes import (
    REPO_ROOT,
    Process,
    celery_worker_args,
    free_port,
    port_open,
    redis_server_args,
    wait_until,
)
from shared.config import Settings, load_settings
from shared.models import StripeEvent
from tests.conftest import WEBHOOK_SECRET

MASTER_NAME = "payments"


@dataclass
class SentinelRedis:
    master: Process
    replica: Process
    sentinel: Process
    master_port: int
    replica_port: int
    sentinel_port: int

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.sentinel_port}/0"

    def current_master_port(self) -> int:
        client = redis.Redis(port=self.sentinel_port)
        _host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def stop(self) -> None:
        for proc in (self.sentinel, self.replica, self.master):
            proc.stop()


@pytest.fixture
def sentinel_redis(tmp_path: Path) -> Iterator[SentinelRedis]:
    ports = [free_port() for _ in range(3)]
    # --dir: a full resync writes an RDB file even with saving off; not into the checkout.
    here = ["--dir", str(tmp_path)]
    master = Process("sentinel-master", [*redis_server_args(ports[0]), *here], dict(os.environ))
    replica = Process(
        "sentinel-replica",
        [*redis_server_args(ports[1]), *here, "--replicaof", "127.0.0.1", str(ports[0])],
        dict(os.environ),
    )
    # Sentinel rewrites its configuration file as it learns: it must be a file of its own.
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port {ports[2]}\nbind 127.0.0.1\n"
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {ports[0]} 1\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
        f"sentinel failover-timeout {MASTER_NAME} 5000\n"
    )
    sentinel = Process("sentinel", ["redis-server", str(config), "--sentinel"], dict(os.environ))
    stack = SentinelRedis(master, replica, sentinel, *ports)
    try:
        wait_until(lambda: all(port_open(p) for p in ports), 20, "Redis and Sentinel start")
        wait_until(lambda: _replica_in_sync(ports[1]), 20, "the replica in sync")
        # Sentinel learns of replicas from the master's INFO, every 10 s: with none known, it
        # would find "no good slave" to promote.
        wait_until(lambda: _sentinel_knows_a_replica(ports[2]), 30, "Sentinel finding the replica")
        yield stack
    finally:
        stack.stop()


def _replica_in_sync(port: int) -> bool:
    info = cast(dict[str, Any], redis.Redis(port=port).info("replication"))
    return info.get("master_link_status") == "up"


def _sentinel_knows_a_replica(port: int) -> bool:
    return bool(redis.Redis(port=port).sentinel_slaves(MASTER_NAME))


def _deliver(settings: Settings, event: dict[str, Any]) -> int:
    body, headers = stripe_events.signed(event, WEBHOOK_SECRET)
    answer = create_app(settings).test_client().post("/webhook", data=body, headers=headers)
    return answer.status_code


def _recorded(sessions: sessionmaker[Session], event_id: str) -> bool:
    with sessions() as session:
        return session.get(StripeEvent, event_id) is not None


def _new_event() -> dict[str, Any]:
    return stripe_events.event(
        "payment_intent.succeeded", stripe_events.payment_intent(status="succeeded")
    )


def test_web_and_worker_follow_a_sentinel_failover(
    base_env, settings: Settings, sessions: sessionmaker[Session], sentinel_redis: SentinelRedis
):
    env = {**base_env, "BROKER_URL": sentinel_redis.url, "BROKER_SENTINEL_MASTER": MASTER_NAME}
    web_settings = replace(load_settings(env), database_url=settings.database_url)
    worker_env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}
    worker = Process(
        "worker-sentinel", celery_worker_args("sentinel@%h", concurrency=1), worker_env
    )
    try:
        before = _new_event()
        assert _deliver(web_settings, before) == 200
        wait_until(lambda: _recorded(sessions, before["id"]) or not worker.alive(), 60, "first")
        assert worker.alive(), worker.output()

        sentinel_redis.master.kill_group()
        wait_until(
            lambda: sentinel_redis.current_master_port() == sentinel_redis.replica_port,
            30,
            "Sentinel promoting the replica",
        )
        after = _new_event()
        # As Stripe does: a delivery refused while the broker moved is sent again.
        wait_until(lambda: _deliver(web_settings, after) == 200, 30, "a delivery accepted")
        wait_until(lambda: _recorded(sessions, after["id"]) or not worker.alive(), 60, "second")
        assert worker.alive(), worker.output()
        assert _recorded(sessions, after["id"])
    finally:
        worker.stop()
