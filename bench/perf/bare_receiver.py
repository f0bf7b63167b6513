"""The bare webhook receiver issue 12 compares ours with: Stripe SDK verify, then one LPUSH.

Served by `make bench` with exactly the Procfile `web` line's gunicorn flags (only the app
differs), against the same Redis, with the same pre-signed deliveries. No encryption, no
metrics, no logging of its own, no scope checks: the floor a receiver cannot go below.

``BARE_VERIFY`` picks how it verifies: ``construct_event`` (the default, as issue 12 specifies:
``stripe.Webhook.construct_event``, which also builds a StripeObject tree from the event) or
``header`` (``stripe.WebhookSignature.verify_header`` then ``json.loads``: the same signature
and JSON checks without building objects, which is what a receiver that only enqueues needs).
"""

from __future__ import annotations

import json
import os

import redis
import stripe
from flask import Flask, Response, jsonify, request

QUEUE = "bare_events"
TOLERANCE_SECONDS = 300

app = Flask(__name__)
_secret = os.environ["STRIPE_WEBHOOK_SECRET"]
_redis = redis.Redis.from_url(os.environ["REDIS_URL"])
_header_only = os.environ.get("BARE_VERIFY", "construct_event") == "header"


def _verify(payload: bytes, signature: str) -> None:
    if _header_only:
        stripe.WebhookSignature.verify_header(
            payload.decode(), signature, _secret, TOLERANCE_SECONDS
        )
        json.loads(payload)
    else:
        stripe.Webhook.construct_event(payload, signature, _secret, TOLERANCE_SECONDS)


@app.post("/webhook")
def webhook() -> tuple[Response, int]:
    payload = request.get_data()
    try:
        _verify(payload, request.headers.get("Stripe-Signature", ""))
    except (ValueError, stripe.SignatureVerificationError):
        return jsonify({"received": False}), 400
    _redis.lpush(QUEUE, payload)
    return jsonify({"received": True}), 200
