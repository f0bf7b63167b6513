"""On RabbitMQ our queues are quorum queues with a delivery limit and a dead-letter queue.

These run against the machine's RabbitMQ, each in a virtual host of its own, whichever broker
the rest of the suite runs on: they test what we declare there, not behaviour.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from celery import Celery
from kombu import Connection, Consumer, Message, Producer, Queue

from api import create_app
from devtools import stripe_events
from devtools.processes import declare_worker_queues, wait_until
from shared.config import Settings
from shared.infra.broker import EVENTS_QUEUE, HANDLERS_QUEUE, make_producer
from shared.infra.topology import (
    DEAD_LETTER_QUEUE,
    broker_countdown,
    dead_letter_depth,
    dead_letter_queue,
    delivery_limit,
    is_amqp,
)
from shared.observability.metrics import LedgerCollector
from tests.conftest import WEBHOOK_SECRET
from tests.support.brokers import (
    accept_publishes,
    rabbitmq_queue_types,
    rabbitmq_vhost,
    refuse_publishes,
)


@pytest.fixture
def amqp_settings(settings: Settings) -> Iterator[Settings]:
    with rabbitmq_vhost(f"payments-topology-{os.getpid()}") as url:
        yield replace(settings, broker_url=url)


def test_events_and_handlers_are_quorum_queues_with_a_dead_letter_queue(amqp_settings):
    producer = make_producer(amqp_settings)
    try:
        declare_worker_queues(producer)
    finally:
        producer.close()
    vhost = amqp_settings.broker.rsplit("/", 1)[1]
    types = rabbitmq_queue_types(vhost)
    assert types[EVENTS_QUEUE] == "quorum"
    assert types[HANDLERS_QUEUE] == "quorum"
    assert types[DEAD_LETTER_QUEUE] == "quorum"


def test_a_message_that_keeps_crashing_its_consumer_goes_to_the_dead_letter_queue(
    amqp_settings,
):
    producer = make_producer(amqp_settings)
    declare_worker_queues(producer)
    producer.close()
    limit = delivery_limit(amqp_settings.handler_max_attempts)
    with Connection(amqp_settings.broker) as connection:
        Producer(connection).publish(
            {"poison": True}, exchange=HANDLERS_QUEUE, routing_key=HANDLERS_QUEUE
        )
        handed_out = _give_back_until_gone(connection, HANDLERS_QUEUE)
        # Counted for the broker_dead_letters gauge (and its alert) while it waits there.
        app = make_producer(amqp_settings)
        wait_until(lambda: _broker_dead_letters(app) == 1, 10, "the gauge counting it")
        app.close()
        dead = connection.SimpleQueue(dead_letter_queue(), no_ack=True)
        assert dead.get(timeout=10).payload == {"poison": True}
    # Handed out the limit's number of times, then once more past it: then it is moved.
    assert handed_out == limit + 1


def _broker_dead_letters(app: Celery) -> float | None:
    collector = LedgerCollector(lambda: 0, dict, lambda: dead_letter_depth(app))
    samples = {
        sample.name: sample.value for metric in collector.collect() for sample in metric.samples
    }
    return samples.get("broker_dead_letters")


def _give_back_until_gone(connection: Connection, queue: str) -> int:
    """Take the message and hand it back unacknowledged, as a consumer that crashes on it
    does, until RabbitMQ stops handing it out. Returns how many times it came."""
    seen: list[Message] = []

    def crash(message: Message) -> None:
        seen.append(message)
        message.requeue()

    channel = connection.channel()
    # no_declare: the queue exists, with arguments this plain declaration would contradict.
    with Consumer(channel, queues=[Queue(queue, no_declare=True)], on_message=crash):
        last = -1
        while len(seen) != last:
            last = len(seen)
            try:
                connection.drain_events(timeout=2)
            except TimeoutError:
                break
    return len(seen)


def test_redis_has_no_broker_dead_letter_gauge(settings):
    app = make_producer(replace(settings, broker_url=None))  # the Redis at REDIS_URL
    assert _broker_dead_letters(app) is None
    app.close()


def test_a_retry_waits_in_whole_seconds_on_rabbitmq_only():
    assert is_amqp("amqp://guest:guest@127.0.0.1:5672//")
    assert is_amqp("amqp://a:1//;amqp://b:2//")
    assert not is_amqp("redis://127.0.0.1:6379/0")
    assert broker_countdown("amqp://h//", 0.3) == 1.0
    assert broker_countdown("amqp://h//", 2.2) == 3.0
    assert broker_countdown("redis://h/0", 0.3) == 0.3
    assert broker_countdown("amqp://h//", None) is None


def _signed_event() -> tuple[bytes, dict[str, str]]:
    event = stripe_events.event(
        "payment_intent.succeeded", stripe_events.payment_intent(status="succeeded")
    )
    body, headers = stripe_events.signed(event, WEBHOOK_SECRET)
    return body, headers


def test_the_webhook_waits_out_a_broker_refusing_for_a_moment(amqp_settings):
    """RabbitMQ refuses publishes (nacks) for a moment while a queue elects a new leader. Here a
    policy makes the events queue refuse everything for a second, as a full queue does."""
    producer = make_producer(amqp_settings)
    declare_worker_queues(producer)
    producer.close()
    vhost = amqp_settings.broker.rsplit("/", 1)[1]
    client = create_app(amqp_settings).test_client()
    body, headers = _signed_event()
    refuse_publishes(vhost, amqp_settings.broker)
    threading.Timer(1.0, accept_publishes, args=[vhost]).start()
    started = time.monotonic()
    answer = client.post("/webhook", data=body, headers=headers)
    assert answer.status_code == 200, answer.get_json()
    assert time.monotonic() - started >= 0.9  # it was refused, then sent again

    refuse_publishes(vhost, amqp_settings.broker)
    try:
        answer = client.post("/webhook", data=body, headers=headers)
    finally:
        accept_publishes(vhost)
    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "queue_unavailable"
