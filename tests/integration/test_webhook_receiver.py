"""POST /webhook: verify first, enqueue only what verifies, answer fast."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace
from typing import cast

import pytest
import redis
from flask.testing import FlaskClient

from api import create_app
from devtools import stripe_events
from devtools.processes import declare_worker_queues, free_port
from shared.config import Settings
from shared.infra.broker import EVENTS_QUEUE, HANDLERS_QUEUE, make_producer
from shared.infra.crypto import PayloadCipher
from tests.conftest import ENCRYPTION_KEY, OLD_WEBHOOK_SECRET, WEBHOOK_SECRET


@pytest.fixture
def client(quiet_settings: Settings, quiet_redis: redis.Redis) -> FlaskClient:
    # With every queue declared as a worker does, a message routed to more than one queue
    # would show up here.
    producer = make_producer(quiet_settings)
    declare_worker_queues(producer)
    producer.close()
    return create_app(quiet_settings).test_client()


def queued(quiet_redis: redis.Redis) -> list[dict]:
    messages = cast(list[bytes], quiet_redis.lrange(EVENTS_QUEUE, 0, -1))
    return [json.loads(m) for m in messages]


def an_event() -> dict:
    return stripe_events.event(
        "payment_intent.succeeded", stripe_events.payment_intent(status="succeeded")
    )


def test_valid_delivery_is_queued_with_its_exact_body(client, quiet_redis):
    event = an_event()
    body, headers = stripe_events.signed(event, WEBHOOK_SECRET)

    response = client.post("/webhook", data=body, headers=headers)

    assert response.status_code == 200
    assert response.get_json() == {"received": True}
    messages = queued(quiet_redis)
    assert len(messages) == 1
    assert messages[0]["headers"]["task"] == "payments.ingest_event"
    args, _kwargs, _embed = json.loads(base64.b64decode(messages[0]["body"]))
    # Encrypted: Redis may write it to disk, and it holds customers' data.
    assert event["id"] not in args[0]
    assert event["data"]["object"]["id"] not in args[0]
    queued_event = PayloadCipher((ENCRYPTION_KEY,)).decrypt(args[0])
    assert args[1] == "webhook"
    # The verified event, less the client secret, which must not rest in Redis either.
    assert queued_event["id"] == event["id"]
    assert queued_event["data"]["object"]["amount"] == event["data"]["object"]["amount"]
    assert "client_secret" not in queued_event["data"]["object"]
    assert event["data"]["object"]["client_secret"] not in args[0]
    assert messages[0]["headers"]["argsrepr"] == repr((event["id"], event["type"], "webhook"))
    # The event goes to the events queue only, never also to the handlers queue.
    assert quiet_redis.llen(HANDLERS_QUEUE) == 0


def test_old_secret_still_verifies_while_rolling(client, quiet_redis):
    body, headers = stripe_events.signed(an_event(), OLD_WEBHOOK_SECRET)

    response = client.post("/webhook", data=body, headers=headers)

    assert response.status_code == 200
    assert len(queued(quiet_redis)) == 1


def _tampered(body: bytes) -> bytes:
    return body.replace(b'"amount": 1000', b'"amount": 1')


@pytest.mark.parametrize(
    ("case", "expected_code"),
    [
        ("missing_header", "signature_missing"),
        ("no_v1", "signature_invalid"),
        ("wrong_secret", "signature_invalid"),
        ("stale_timestamp", "signature_expired"),
        ("tampered_body", "signature_invalid"),
        ("garbage_header", "signature_invalid"),
    ],
)
def test_bad_signatures_get_400_and_nothing_is_queued(client, quiet_redis, case, expected_code):
    event = an_event()
    body, headers = stripe_events.signed(event, WEBHOOK_SECRET)
    if case == "missing_header":
        del headers["Stripe-Signature"]
    elif case == "no_v1":
        headers["Stripe-Signature"] = headers["Stripe-Signature"].replace("v1=", "v0=")
    elif case == "wrong_secret":
        body, headers = stripe_events.signed(event, "whsec_not_ours_" + "c" * 20)
    elif case == "stale_timestamp":
        body, headers = stripe_events.signed(
            event, WEBHOOK_SECRET, timestamp=int(time.time()) - 301
        )
    elif case == "tampered_body":
        assert _tampered(body) != body
        body = _tampered(body)
    elif case == "garbage_header":
        headers["Stripe-Signature"] = "this is not a signature"

    response = client.post("/webhook", data=body, headers=headers)

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == expected_code
    assert queued(quiet_redis) == []


@pytest.mark.parametrize(
    "body",
    [
        "not json at all",
        json.dumps([1, 2, 3]),
        json.dumps({"id": "evt_1", "type": "x"}),
        json.dumps({"id": "nope", "type": "x", "created": 1, "data": {"object": {}}}),
    ],
)
def test_signed_body_that_is_not_a_stripe_event_gets_400(client, quiet_redis, body):
    signed_body, headers = stripe_events.signed(body, WEBHOOK_SECRET)

    response = client.post("/webhook", data=signed_body, headers=headers)

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_event"
    assert queued(quiet_redis) == []


def test_oversized_body_gets_413_and_nothing_is_queued(client, quiet_redis):
    body, headers = stripe_events.signed({"padding": "x" * 600_000}, WEBHOOK_SECRET)

    response = client.post("/webhook", data=body, headers=headers)

    assert response.status_code == 413
    assert response.get_json()["success"] is False
    assert queued(quiet_redis) == []


@pytest.mark.parametrize(
    "broker",
    [
        {"redis_url": "redis://127.0.0.1:{port}/0"},
        # The direct Redis publish is not used on AMQP: Celery publishes, with its retry policy.
        {"broker_url": "amqp://guest:guest@127.0.0.1:{port}//"},
    ],
    ids=["redis", "rabbitmq"],
)
def test_broker_refusing_gets_503_so_stripe_redelivers(quiet_settings, broker):
    # Nothing listens on this port: the publish cannot succeed.
    port = free_port()
    named = {field: url.format(port=port) for field, url in broker.items()}
    unreachable = replace(quiet_settings, **named)
    client = create_app(unreachable).test_client()
    body, headers = stripe_events.signed(an_event(), WEBHOOK_SECRET)

    started = time.monotonic()
    response = client.post("/webhook", data=body, headers=headers)

    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "queue_unavailable"
    # Stripe waits up to a few seconds for an answer; a hung publish would time it out instead.
    assert time.monotonic() - started < 10
