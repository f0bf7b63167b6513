"""RabbitMQ nodes and clusters of our own (devtools.rabbitmq), for real: a quorum queue keeps
every message whose publish was confirmed through a node's SIGKILL and restart."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import kombu
import pytest

from devtools.processes import wait_until
from devtools.rabbitmq import OwnRabbitCluster, OwnRabbitNode

QUORUM = {"x-queue-type": "quorum"}


def quorum_queue(name: str) -> kombu.Queue:
    return kombu.Queue(name, routing_key=name, durable=True, queue_arguments=QUORUM)


def publish_confirmed(
    connection: kombu.Connection, queue: kombu.Queue, bodies: Iterable[str]
) -> None:
    """Each publish returns only once the broker has confirmed it (raises on a nack): for a
    quorum queue, once a majority of its members has written it."""
    producer = connection.Producer()
    for body in bodies:
        producer.publish(body, routing_key=queue.name, declare=[queue], retry=False)


def confirming(url: str) -> kombu.Connection:
    return kombu.Connection(url, transport_options={"confirm_publish": True})


def drain(url: str, queue: kombu.Queue, expected: int, timeout: float = 30) -> list[str]:
    """Take and acknowledge messages until ``expected`` have come, then check nothing is left."""
    bodies: list[str] = []
    deadline = time.monotonic() + timeout
    with kombu.Connection(url) as connection:
        bound = queue(connection.default_channel)
        while len(bodies) < expected and time.monotonic() < deadline:
            message = bound.get(no_ack=False)
            if message is None:
                time.sleep(0.1)  # Nothing ready yet: ask again, until the deadline.
                continue
            bodies.append(message.payload)
            message.ack()
        assert bound.get(no_ack=False) is None, "more messages than were published"
    return bodies


def leader(node: OwnRabbitNode, queue: kombu.Queue) -> str:
    """The node the queue's leader is on, as ``node`` sees it ("" while there is none)."""
    rows = json.loads(node.ctl("list_queues", "--formatter", "json", "name", "leader"))
    # Just after its leader's node dies, a quorum queue can be missing from the list.
    return next((str(row["leader"] or "") for row in rows if row["name"] == queue.name), "")


def wait_member_saved(node: OwnRabbitNode, queue: kombu.Queue) -> None:
    """Before a SIGKILL: a member not yet saved would not come back (see quorum_member_saved)."""
    wait_until(lambda: node.quorum_member_saved(queue.name), 20, f"{queue.name} saved on disk")


def message_count(url: str, queue: kombu.Queue) -> int:
    with kombu.Connection(url) as connection:
        return queue(connection.default_channel).queue_declare(passive=True).message_count


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[OwnRabbitCluster]:
    cluster = OwnRabbitCluster(tmp_path, size=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[OwnRabbitNode]:
    node = OwnRabbitNode(tmp_path)
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.mark.long
def test_a_quorum_queue_keeps_every_confirmed_message_through_a_node_kill(cluster):
    assert cluster.running_nodes() == {node.nodename for node in cluster.nodes}
    queue = quorum_queue("payments-quorum-probe")
    first = [f"before-{i}" for i in range(50)]
    with confirming(cluster.urls[0]) as connection:
        publish_confirmed(connection, queue, first)
    # Declared through node 0, the queue's leader is there (client-local placement): killing it
    # makes the survivors elect a new leader before they can confirm anything more.
    assert leader(cluster.nodes[1], queue) == cluster.nodes[0].nodename
    wait_member_saved(cluster.nodes[0], queue)

    cluster.kill(0)
    survivors = {node.nodename for node in cluster.nodes[1:]}
    # Until a survivor leads and the queue's record says so, a channel opened now is nacked at
    # once for every publish (nothing is enqueued): a real publisher retries. Here every publish
    # must be confirmed the first time.
    wait_until(lambda: leader(cluster.nodes[1], queue) in survivors, 30, "a new leader")
    second = [f"after-{i}" for i in range(50)]
    # The failover URL lists the dead node first: kombu moves on to the next one.
    with confirming(cluster.broker_url) as connection:
        connection.ensure_connection(max_retries=len(cluster.nodes), interval_start=0)
        assert connection.as_uri(include_password=True) in cluster.urls[1:]
        publish_confirmed(connection, queue, second)

    cluster.restart(0)
    assert message_count(cluster.urls[0], queue) == 100
    bodies = drain(cluster.urls[0], queue, expected=100)
    assert len(bodies) == 100
    assert set(bodies) == set(first + second)


def test_a_single_node_keeps_a_durable_quorum_queue_through_kill_and_restart(node):
    queue = quorum_queue("payments-single-probe")
    sent = [f"message-{i}" for i in range(30)]
    with confirming(node.url) as connection:
        publish_confirmed(connection, queue, sent)
    url = node.url
    wait_member_saved(node, queue)

    node.kill()
    assert not node.alive()
    node.restart()

    assert node.url == url
    bodies = drain(node.url, queue, expected=len(sent))
    assert sorted(bodies) == sorted(sent)
    assert len(set(bodies)) == len(sent)
