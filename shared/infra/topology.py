"""Our queues as each broker needs them declared.

On Redis a queue is a list and declaring costs nothing, so ``events`` and ``handlers`` keep the
plain direct exchanges they always had. On RabbitMQ they are quorum queues: replicated over the
cluster's nodes and durable, so a node that dies takes no queued event with it. A quorum queue
also counts how often each message was handed out; one handed out ``delivery_limit`` times
(its consumer crashed or hung on it every time) goes to the ``payments.dead`` queue instead of
looping for ever. Our own ledger counts a run's attempts at claim (shared.ledger.runs.task) and
dead-letters a run long before that, so the broker's limit is a backstop for a message that
kills its worker before the ledger could count it.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from kombu import Exchange, Queue

AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
DEAD_LETTER_EXCHANGE = "payments.dead"
DEAD_LETTER_QUEUE = "payments.dead"
# Far above HANDLER_MAX_ATTEMPTS: a worker restart hands back what it held without any fault
# of the message's, and that counts as a delivery too.
MIN_DELIVERY_LIMIT = 20
# How long a publish waits for RabbitMQ to confirm the message is on a quorum of nodes. The
# webhook answers 503 past it (Stripe redelivers) rather than hold Stripe's connection open.
CONFIRM_TIMEOUT_SECONDS = 3.0


def is_amqp(broker_url: str) -> bool:
    """Whether ``broker_url`` names RabbitMQ (or several of its nodes, separated by ``;``)."""
    return urlsplit(broker_url.split(";", 1)[0]).scheme in AMQP_SCHEMES


def broker_countdown(broker_url: str, countdown: float | None) -> float | None:
    """``countdown`` as the broker can hold it. RabbitMQ delays in whole seconds and Celery
    refuses a delay that rounds down to none ("countdown must be a positive number"), so a
    retry there waits at least a second, rounded up."""
    if countdown is None or not is_amqp(broker_url):
        return countdown
    return float(max(1, math.ceil(countdown)))


def delivery_limit(handler_max_attempts: int) -> int:
    return max(MIN_DELIVERY_LIMIT, 4 * handler_max_attempts)


def task_queues(broker_url: str, names: tuple[str, ...], limit: int) -> tuple[Queue, ...]:
    if not is_amqp(broker_url):
        # Each queue gets its own exchange and routing key. Left to defaults, both bind to the
        # default queue's exchange with one key, so anything publishing by exchange would put
        # every task in both queues.
        return tuple(Queue(name, Exchange(name, type="direct"), routing_key=name) for name in names)
    return tuple(_quorum_queue(name, limit) for name in names)


def _quorum_queue(name: str, limit: int) -> Queue:
    # Topic, not direct: Celery delays a retry's countdown inside RabbitMQ (native delayed
    # delivery) and that routes only through topic or fanout exchanges; with a direct one the
    # worker would hold the message in memory until its countdown ends.
    return Queue(
        name,
        Exchange(name, type="topic", durable=True),
        routing_key=name,
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": limit,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
            # Dead-lettered only once the dead-letter queue has it (RabbitMQ 3.10+), which
            # requires the source queue to refuse publishes rather than drop when full.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )


def dead_letter_queue() -> Queue:
    return Queue(
        DEAD_LETTER_QUEUE,
        Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True),
        routing_key=DEAD_LETTER_QUEUE,
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )


def amqp_settings(broker_url: str) -> dict[str, Any]:
    """Celery's settings that quorum queues require, on RabbitMQ only."""
    if not is_amqp(broker_url):
        return {}
    return {
        # A publish returns once RabbitMQ has the message on a quorum of nodes.
        "broker_transport_options": {"confirm_publish": True},
        # A peer that vanished without closing its socket (a cut network) is noticed in
        # seconds, and its unacknowledged messages go to another consumer.
        "broker_heartbeat": 10,
        # Quorum queues have no global QoS; Celery then sets the prefetch per consumer.
        "worker_detect_quorum_queues": True,
        "broker_native_delayed_delivery_queue_type": "quorum",
        "task_default_queue_type": "quorum",
    }


def declare_dead_letters(app: Celery) -> None:
    """Declare the dead-letter queue, so that a message that exhausts its delivery limit has
    somewhere to go (an exchange with no queue bound would drop it)."""
    if not is_amqp(app.conf.broker_url):
        return
    with app.connection_for_write() as connection:
        dead_letter_queue()(connection.default_channel).declare()


def dead_letter_depth(app: Celery) -> int | None:
    """Messages RabbitMQ moved to ``payments.dead`` (None on Redis, which has no such queue):
    each one kept crashing its consumer, and its event waits for `payments events replay` or the
    reconciler."""
    if not is_amqp(app.conf.broker_url):
        return None
    with app.connection_for_read() as connection:
        declared = dead_letter_queue()(connection.default_channel).queue_declare()
        return int(declared.message_count)
