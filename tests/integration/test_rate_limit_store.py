"""The rate limiter's counters under a flood of distinct clients (issue 23, item 2): each key
expires with its window, and the Redis that compose ships for them evicts instead of filling
up. Run against a redis-server started with the compose service's own flags."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis
import yaml

from api import create_app
from devtools.processes import REPO_ROOT, Process, free_port, port_open, wait_until
from shared.config import Settings

PASSWORD = "rate-limit-store-password-for-tests"
FLOOD = 3000
# The budget the flood's counters must stay within, over what the store uses once the app is
# connected: far below compose's 64mb, so that a few thousand clients (a counter is about
# 300 bytes) reach it.
HEADROOM_BYTES = 300_000


def compose_ratelimit_command() -> list[str]:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    command: list[str] = compose["services"]["ratelimit"]["command"]
    return [PASSWORD if arg.startswith("${REDIS_PASSWORD") else arg for arg in command]


@pytest.fixture
def ratelimit_redis() -> Iterator[redis.Redis]:
    port = free_port()
    args = [*compose_ratelimit_command(), "--port", str(port), "--bind", "127.0.0.1"]
    server = Process("ratelimit-redis", args, dict(os.environ))
    client = redis.Redis(port=port, password=PASSWORD)
    try:
        wait_until(lambda: port_open(port), 20, "rate-limit Redis start")
        wait_until(lambda: bool(client.ping()), 20, "rate-limit Redis ping")
        yield client
    finally:
        client.close()
        server.stop()


def test_a_flood_of_distinct_clients_leaves_a_bounded_store(settings: Settings, ratelimit_redis):
    port = ratelimit_redis.connection_pool.connection_kwargs["port"]
    app = create_app(
        replace(
            settings,
            rate_limit="5 per minute",
            rate_limit_storage_url=f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
        )
    )
    client = app.test_client()
    client.post("/api/create-payment", environ_base={"REMOTE_ADDR": "192.0.2.1"})
    used = int(ratelimit_redis.info("memory")["used_memory"])
    ratelimit_redis.config_set("maxmemory", used + HEADROOM_BYTES)

    answers = set()
    for n in range(FLOOD):
        address = f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"
        response = client.post("/api/create-payment", environ_base={"REMOTE_ADDR": address})
        answers.add(response.status_code)

    keys = list(ratelimit_redis.scan_iter(match="*payments-ratelimit/*", count=1000))
    memory = ratelimit_redis.info("memory")
    stats = ratelimit_redis.info("stats")
    # Every client was answered as usual: no 5xx, the store never refused a write.
    assert answers == {401}
    # Bounded: the store evicted counters rather than grow past its budget.
    assert int(stats["evicted_keys"]) > 0
    assert len(keys) < FLOOD
    # (Redis evicts before a command, so the last write may leave it a counter over.)
    assert int(memory["used_memory"]) <= int(memory["maxmemory"]) + 4096
    # Never full: no write was refused (with noeviction, the broker's policy, they would be,
    # and the limiter would fall back to counting per process).
    assert "errorstat_OOM" not in ratelimit_redis.info("errorstats")
    # And every counter left goes by itself when its window ends. (-2: evicted since the scan;
    # even reads evict while the store is at its budget.)
    ttls = [ttl for key in keys[:200] if (ttl := ratelimit_redis.ttl(key)) != -2]
    assert ttls and all(0 < ttl <= 60 for ttl in ttls), ttls
