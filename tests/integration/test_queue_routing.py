"""Each task lands in exactly one queue, on a real Redis and on a real RabbitMQ (quorum queues,
a virtual host of the test's own) with every queue declared as a worker declares it. The
receiver's direct Redis publish exists on Redis only, and so do its tests."""

from __future__ import annotations

import base64
import json
import os
import shutil
from dataclasses import replace

import kombu.exceptions
import pytest

from devtools.processes import declare_worker_queues, free_port, wait_until
from shared.infra.broker import EVENTS_QUEUE, HANDLERS_QUEUE, make_producer
from shared.infra.redis_publish import RedisTaskPublisher
from shared.task_names import INGEST_EVENT_TASK, RUN_HANDLER_TASK
from tests.support.brokers import rabbitmq_in_flight, rabbitmq_queue_types, rabbitmq_vhost


@pytest.mark.parametrize(
    ("task", "queue"), [(INGEST_EVENT_TASK, EVENTS_QUEUE), (RUN_HANDLER_TASK, HANDLERS_QUEUE)]
)
def test_task_is_routed_to_its_queue_only(quiet_settings, quiet_redis, task, queue):
    producer = make_producer(quiet_settings)
    declare_worker_queues(producer)
    producer.send_task(task, args=["x", "y"])
    producer.close()

    lengths = {name: quiet_redis.llen(name) for name in (EVENTS_QUEUE, HANDLERS_QUEUE)}

    assert lengths == {
        EVENTS_QUEUE: int(queue == EVENTS_QUEUE),
        HANDLERS_QUEUE: int(queue == HANDLERS_QUEUE),
    }


@pytest.mark.skipif(not shutil.which("rabbitmqctl"), reason="RabbitMQ is not installed")
@pytest.mark.parametrize(
    ("task", "queue"), [(INGEST_EVENT_TASK, EVENTS_QUEUE), (RUN_HANDLER_TASK, HANDLERS_QUEUE)]
)
def test_task_is_routed_to_its_quorum_queue_only_on_rabbitmq(quiet_settings, task, queue):
    vhost = f"payments-routing-{os.getpid()}-{queue}"
    with rabbitmq_vhost(vhost) as url:
        producer = make_producer(replace(quiet_settings, broker_url=url))
        declare_worker_queues(producer)
        producer.send_task(task, args=["x", "y"])
        producer.close()
        expected = {
            EVENTS_QUEUE: int(queue == EVENTS_QUEUE),
            HANDLERS_QUEUE: int(queue == HANDLERS_QUEUE),
        }

        def lengths() -> dict[str, int]:
            counts = rabbitmq_in_flight(vhost)
            return {name: counts[name] for name in (EVENTS_QUEUE, HANDLERS_QUEUE)}

        wait_until(lambda: lengths() == expected, 10, f"the task in {queue} only")
        types = rabbitmq_queue_types(vhost)
        assert (types[EVENTS_QUEUE], types[HANDLERS_QUEUE]) == ("quorum", "quorum")


def _stored(quiet_redis, queue: str) -> dict:
    message = json.loads(quiet_redis.rpop(queue))
    body = json.loads(base64.b64decode(message.pop("body")))
    task_id = message["headers"]["id"]
    # What differs from one publish to the next: ids, the publishing process, the tag.
    for key in ("id", "root_id", "origin"):
        assert message["headers"].pop(key)
    assert message["properties"].pop("correlation_id") == task_id
    assert message["properties"].pop("delivery_tag")
    message["properties"].pop("reply_to")
    return {"message": message, "body": body}


def test_a_direct_publish_queues_what_celery_would(quiet_settings, quiet_redis):
    """The receiver writes the ingest task onto Redis itself (shared.infra.redis_publish):
    a worker, Flower and the sweeper must find exactly the message Celery's send_task
    queues, on the same list."""
    producer = make_producer(quiet_settings)
    declare_worker_queues(producer)
    args, argsrepr = ["token", "webhook"], "('evt_1', 'payment_intent.succeeded', 'webhook')"
    producer.send_task(INGEST_EVENT_TASK, args=args, argsrepr=argsrepr, queue=EVENTS_QUEUE)
    through_celery = _stored(quiet_redis, EVENTS_QUEUE)
    publisher = RedisTaskPublisher(producer, quiet_settings.redis_url)
    publisher.send(INGEST_EVENT_TASK, args, argsrepr=argsrepr, queue=EVENTS_QUEUE)
    direct = _stored(quiet_redis, EVENTS_QUEUE)
    publisher.close()
    producer.close()

    # Celery also copies argsrepr into the AMQP properties, where no consumer reads it.
    through_celery["message"]["properties"].pop("argsrepr")
    assert direct["message"]["headers"] == through_celery["message"]["headers"]
    assert direct == through_celery
    assert quiet_redis.llen(HANDLERS_QUEUE) == 0


def test_a_direct_publish_to_a_dead_broker_fails_fast(quiet_settings):
    producer = make_producer(quiet_settings)
    publisher = RedisTaskPublisher(producer, f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(kombu.exceptions.OperationalError):
        publisher.send(INGEST_EVENT_TASK, ["token", "webhook"], argsrepr="x", queue=EVENTS_QUEUE)
