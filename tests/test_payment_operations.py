"""The operators' refund, capture and cancel, and create-payment's captureMethod, on the real
parts: our API served on a port, the stand-in, its webhooks, Redis, a worker and PostgreSQL."""

from __future__ import annotations

import secrets
from typing import Any

import requests


def create(api, body: dict[str, Any], key: str | None = None) -> requests.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return api.create_payment({"currency": "usd", **body}, **headers)


def stand_in_intent(settings, payment_intent_id: str) -> dict[str, Any]:
    response = requests.get(
        f"{settings.stripe_api_base}/v1/payment_intents/{payment_intent_id}",
        auth=(settings.stripe_secret_key, ""),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    intent: dict[str, Any] = response.json()
    return intent


def test_capture_method_manual_reaches_stripe_and_belongs_to_the_key(api, settings):
    key = f"order-{secrets.token_hex(6)}"
    manual = create(api, {"amount": 1500, "captureMethod": "manual"}, key)
    assert manual.status_code == 200, manual.text
    intent_id = manual.json()["paymentIntentId"]
    assert stand_in_intent(settings, intent_id)["capture_method"] == "manual"

    again = create(api, {"amount": 1500, "captureMethod": "manual"}, key)
    assert again.json()["paymentIntentId"] == intent_id
    assert again.headers["Idempotent-Replayed"] == "true"
    # The same key for the same order without captureMethod is another request.
    other = create(api, {"amount": 1500}, key)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"

    # Without captureMethod, Stripe's default (automatic) stands.
    default = create(api, {"amount": 1500})
    other_intent = stand_in_intent(settings, default.json()["paymentIntentId"])
    assert other_intent["capture_method"] != "manual"


def test_a_bad_capture_method_is_a_400_naming_the_choices(api):
    response = create(api, {"amount": 1600, "captureMethod": "later"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["field"], error["message"]) == (
        "captureMethod",
        "must be one of automatic, manual",
    )
