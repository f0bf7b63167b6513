"""The broker the suite runs on: Redis (the default) or RabbitMQ (``TEST_BROKER=rabbitmq``).

No test of behaviour knows which one runs; only the fixtures that start the worker and wait for
it to settle ask the broker what it holds, each in its own way.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import redis
from amqp.exceptions import MessageNacked
from kombu import Connection, Producer

TEST_BROKER = os.environ.get("TEST_BROKER", "redis")
RABBITMQ = "127.0.0.1:5672"


def on_rabbitmq() -> bool:
    return TEST_BROKER == "rabbitmq"


def _rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


@contextmanager
def rabbitmq_vhost(name: str) -> Iterator[str]:
    """A virtual host of the machine's RabbitMQ of our own for one test session: its queues,
    exchanges and messages are gone with it, and nothing else on that server is touched."""
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBITMQ}/{name}"
    finally:
        _rabbitmqctl("delete_vhost", name)


def rabbitmq_in_flight(vhost: str) -> dict[str, int]:
    """Messages ready or handed out and unacknowledged, per queue of ``vhost``: including the
    queues that hold a retry until its countdown ends (native delayed delivery)."""
    out = _rabbitmqctl("list_queues", "-p", vhost, "-q", "--no-table-headers", "name", "messages")
    counts = {}
    for line in out.splitlines():
        name, messages = line.split()
        counts[name] = int(messages)
    return counts


def redis_in_flight(client: redis.Redis, queues: tuple[str, ...]) -> dict[str, int]:
    counts = {queue: cast(int, client.llen(queue)) for queue in queues}
    counts["unacked"] = cast(int, client.hlen("unacked"))  # kombu's Redis transport's hash
    return counts


def rabbitmq_queue_types(vhost: str) -> dict[str, str]:
    out = _rabbitmqctl("list_queues", "-p", vhost, "-q", "--no-table-headers", "name", "type")
    return dict(line.split() for line in out.splitlines())


def refuse_publishes(vhost: str, url: str) -> None:
    """Make the events queue refuse every publish, as RabbitMQ does while a quorum queue has no
    leader: a length limit of 0, and our queues overflow by rejecting (x-overflow). A quorum
    queue applies the limit from the next publish on, so probe until one is refused."""
    _rabbitmqctl(
        "set_policy",
        "-p",
        vhost,
        "--apply-to",
        "queues",
        "refuse",
        "^events$",
        '{"max-length": 0}',
    )
    with Connection(url, transport_options={"confirm_publish": True}) as connection:
        producer = Producer(connection)
        for _ in range(20):
            try:
                producer.publish({"probe": True}, exchange="events", routing_key="events")
            except MessageNacked:
                return
        raise AssertionError("RabbitMQ kept accepting publishes past a max-length of 0")


def accept_publishes(vhost: str) -> None:
    _rabbitmqctl("clear_policy", "-p", vhost, "refuse")
