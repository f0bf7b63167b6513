"""``POST /webhook``: verify the Stripe signature and the event's scope, then enqueue.

No database, no Stripe call: the receiver's whole job is to answer Stripe in milliseconds,
and to answer 2xx only once the event is in the broker.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, jsonify, request
from kombu.exceptions import OperationalError as BrokerError
from werkzeug.exceptions import RequestEntityTooLarge

from api.bodies import MAX_WEBHOOK_BYTES, read_capped_body
from api.context import ApiContext
from api.errors import error_response
from shared.ledger.event_rules import EventRefused, WebhookRejected
from shared.ledger.receive.signatures import VerifiedDelivery, verify_delivery
from shared.observability.logs import bind
from shared.observability.metrics import (
    EVENTS_REFUSED,
    WEBHOOK_EVENTS,
    WEBHOOK_LATENCY,
    WEBHOOK_SECRET_MATCHES,
)

log = logging.getLogger(__name__)

Answer = tuple[Response, int]


def webhook_blueprint(api: ApiContext) -> Blueprint:
    webhook = Blueprint("webhook", __name__)

    @webhook.post("/webhook")
    def receive() -> Answer:
        started = time.perf_counter()
        try:
            return _receive(api)
        finally:
            WEBHOOK_LATENCY.observe(time.perf_counter() - started)

    return webhook


def _receive(api: ApiContext) -> Answer:
    settings = api.settings
    try:
        # Raw bytes: the signature covers the body exactly as sent.
        body = read_capped_body(MAX_WEBHOOK_BYTES)
    except RequestEntityTooLarge:
        WEBHOOK_EVENTS.labels(type="unknown", result="rejected").inc()
        raise
    try:
        delivery = verify_delivery(
            body,
            request.headers.get("Stripe-Signature"),
            settings.stripe_webhook_secrets,
            settings.webhook_tolerance_seconds,
            api.runtime.scope,
        )
    except EventRefused as exc:
        return _refused(exc)
    except WebhookRejected as exc:
        WEBHOOK_EVENTS.labels(type="unknown", result="rejected").inc()
        log.warning("webhook rejected: %s", exc.code)
        return error_response(400, exc.code, exc.message)
    return _enqueue(api, delivery)


def _refused(exc: EventRefused) -> Answer:
    EVENTS_REFUSED.labels(reason=exc.code, stage="webhook").inc()
    log.warning("webhook %s refused: %s", exc.event_id, exc.code)
    if exc.acknowledge:
        WEBHOOK_EVENTS.labels(type=exc.event_type, result="ignored").inc()
        return jsonify({"received": True, "ignored": exc.code}), 200
    WEBHOOK_EVENTS.labels(type=exc.event_type, result="rejected").inc()
    return error_response(400, exc.code, exc.message)


def _enqueue(api: ApiContext, delivery: VerifiedDelivery) -> Answer:
    try:
        api.events.publish(delivery.event, "webhook", api.runtime.cipher)
    except BrokerError:
        WEBHOOK_EVENTS.labels(type=delivery.event_type, result="broker_error").inc()
        log.exception("broker refused event %s", delivery.event_id)
        return error_response(
            503, "queue_unavailable", "Could not queue the event; Stripe will retry."
        )
    bind(event_id=delivery.event_id)
    index = delivery.secret_index
    names = api.settings.stripe_webhook_endpoints
    endpoint = names[index] if index < len(names) else str(index)
    WEBHOOK_SECRET_MATCHES.labels(secret_index=str(index), endpoint=endpoint).inc()
    WEBHOOK_EVENTS.labels(type=delivery.event_type, result="queued").inc()
    log.info(
        "webhook %s (%s) queued, verified with secret #%d",
        delivery.event_id,
        delivery.event_type,
        delivery.secret_index,
    )
    return jsonify({"received": True}), 200
