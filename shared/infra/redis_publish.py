"""Publishing a Celery task straight onto Redis: one LPUSH on a long-lived client.

Celery's ``send_task`` on the Redis transport costs about four times the LPUSH it ends in:
kombu builds a new Redis client for every publish and runs Celery's routing, signals and
retry machinery around it. The webhook receiver publishes one task per delivery and must
answer in milliseconds, so it writes the message itself: Celery's own task message
(``app.amqp.as_task_v2``, protocol 2) in the envelope kombu's Redis transport writes and
reads, on the list kombu reads the queue from. Workers, Flower and the sweeper see exactly
what ``send_task`` would have queued (tests/integration/test_queue_routing.py compares the two).
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

DIRECT_SCHEMES = ("redis", "rediss", "unix")


class BrokerUnavailable(OperationalError):
    """The broker did not take the message: the caller answers 503 and Stripe redelivers."""


def can_publish_directly(broker_url: str, transport_options: dict[str, Any]) -> bool:
    """Whether queued messages live in plain Redis lists named after their queue. Sentinel,
    AMQP and key prefixes go through kombu, which knows their layout."""
    scheme = urlsplit(broker_url).scheme
    return scheme in DIRECT_SCHEMES and not transport_options.get("global_keyprefix")


class RedisTaskPublisher:
    def __init__(self, app: Celery, broker_url: str) -> None:
        self._amqp = app.amqp
        # A publish from a webhook request fails fast (Stripe redelivers what we refuse): one
        # quick reconnect, then BrokerUnavailable. A Redis that stops answering costs a request
        # at most a reply's wait, the backoff and two connect attempts (redis-py retries the
        # connect itself), about 4.5 s, inside the publisher's 5 s patience; an LPUSH takes a
        # millisecond.
        self._client = redis.Redis.from_url(
            broker_url,
            socket_connect_timeout=1,
            socket_timeout=2,
            socket_keepalive=True,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.2), retries=1),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )

    def send(self, task: str, args: list[Any], *, argsrepr: str, queue: str) -> str:
        """Queue ``task(*args)`` on ``queue``; returns the task id."""
        task_id = str(uuid.uuid4())
        # ignore_result=None as send_task passes it: the task's own setting decides.
        message = self._amqp.as_task_v2(
            task_id, task, args=args, argsrepr=argsrepr, ignore_result=None
        )
        try:
            self._client.lpush(queue, json.dumps(kombu_envelope(message, queue)))
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"could not queue {task}: {exc}") from exc
        return task_id

    def close(self) -> None:
        self._client.close()


def kombu_envelope(message: Any, queue: str) -> dict[str, Any]:
    """The JSON document kombu's Redis transport stores for a message published to ``queue``
    through the default exchange, as ``Channel.prepare_message`` and ``basic_publish`` build
    it: the body JSON-serialised then base64-encoded, persistent, priority 0."""
    body = json.dumps(message.body).encode()
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": message.headers,
        "properties": {
            **message.properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
