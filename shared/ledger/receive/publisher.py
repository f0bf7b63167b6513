"""The one way onto the ``events`` queue: each event encrypted as the ledger stores it, on
Redis written straight onto the list, elsewhere through Celery with publisher confirms."""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError

from shared.infra.broker import EVENTS_QUEUE
from shared.infra.crypto import PayloadCipher
from shared.infra.redis_publish import BrokerUnavailable, RedisTaskPublisher, can_publish_directly
from shared.infra.topology import CONFIRM_TIMEOUT_SECONDS
from shared.ledger.event_rules import storable_event
from shared.task_names import INGEST_EVENT_TASK

# Pauses before sending again an event the broker refused, and how long the webhook waits in
# all for a broker failing over (see EventPublisher._publish_confirmed).
PUBLISH_RETRY_PAUSES_SECONDS = (0.1, 0.3, 0.6, 1.0, 1.0, 1.0)
PUBLISH_PATIENCE_SECONDS = 5.0
# A publish from the webhook request must fail fast so we can answer 503 and Stripe redelivers:
# on a broker that stops answering, a confirm's wait and one reconnect within the web producer's
# connect timeout fit the patience.
WEBHOOK_BROKER_CONNECT_SECONDS = 2.0
WEBHOOK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}


class EventPublisher:
    """The one way onto the ``events`` queue. The worker ingests only bodies encrypted under
    our keys (authenticated: see shared.ledger.ingest.queue_bodies.queued_event), so this
    encrypts every event it publishes; a tool that enqueues an event goes through here too. On
    a plain Redis broker it writes the task itself (shared.infra.redis_publish); elsewhere
    Celery publishes it."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        conf = app.conf
        self._direct = (
            RedisTaskPublisher(app, conf.broker_url)
            if can_publish_directly(conf.broker_url, conf.broker_transport_options or {})
            else None
        )

    def publish(self, event: dict[str, Any], source: str, cipher: PayloadCipher) -> None:
        """Queue ``event`` for ingest, without its client secret, encrypted like the database
        copy (Redis may write it to disk, and it holds customers' data). Raises
        kombu.exceptions.OperationalError when the broker cannot take the message."""
        args = [cipher.encrypt(storable_event(event)), source]
        # What Flower and the worker log show instead of the whole payload.
        argsrepr = repr((event["id"], event["type"], source))
        if self._direct is not None:
            self._direct.send(INGEST_EVENT_TASK, args, argsrepr=argsrepr, queue=EVENTS_QUEUE)
            return
        self._publish_confirmed(event["id"], args, argsrepr)

    def _publish_confirmed(self, event_id: str, args: list[Any], argsrepr: str) -> None:
        # While a broker node fails over (RabbitMQ elects a new leader for each queue the dead
        # node led, for a second or two), publishes are refused: nacked, or their connection
        # lost. Nothing refused was stored, so sending again is safe; give the cluster a few
        # seconds before answering 503, which costs the event Stripe's redelivery delay.
        deadline = time.monotonic() + PUBLISH_PATIENCE_SECONDS
        pauses = iter(PUBLISH_RETRY_PAUSES_SECONDS)
        while True:
            try:
                self._send_ingest(args, argsrepr)
                return
            except OperationalError as exc:
                pause = next(pauses, None)
                if pause is None or time.monotonic() + pause > deadline:
                    raise BrokerUnavailable(f"the broker refused event {event_id}") from exc
                time.sleep(pause)

    def _send_ingest(self, args: list[Any], argsrepr: str) -> None:
        # A nack (amqp's MessageNacked, a recoverable connection error to kombu) reaches us as
        # kombu's OperationalError, like a lost connection.
        self._app.send_task(
            INGEST_EVENT_TASK,
            args=args,
            argsrepr=argsrepr,
            queue=EVENTS_QUEUE,
            retry=True,
            retry_policy=WEBHOOK_PUBLISH_RETRY_POLICY,
            # RabbitMQ: return (and answer 2xx) once a quorum of nodes has the event.
            confirm_timeout=CONFIRM_TIMEOUT_SECONDS,
        )
