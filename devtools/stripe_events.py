"""Stripe-shaped events built from Stripe's own example objects (devtools/stripe-fixtures).

The stand-in's events use an old API version's shapes; these carry today's field set
(``latest_charge`` as an id, ``last_payment_error`` with ``decline_code``) as real Stripe sends it.
"""

from __future__ import annotations

import copy
import functools
import json
import secrets
import time
from pathlib import Path
from typing import Any

import stripe

# Vendored with its MIT licence (devtools/stripe-fixtures/LICENSE): nothing outside the repo.
FIXTURES = Path(__file__).parent / "stripe-fixtures" / "fixtures3.json"

# Messages and codes as Stripe returns them for its test cards.
DECLINES = {
    "4000000000000002": {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "generic_decline",
        "message": "Your card was declined.",
    },
    "4000000000009995": {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
    },
}


@functools.cache
def _resources() -> dict[str, Any]:
    resources: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]
    return resources


def resource(name: str) -> dict[str, Any]:
    return copy.deepcopy(_resources()[name])


def new_id(prefix: str) -> str:
    return f"{prefix}_test{secrets.token_hex(8)}"


def payment_intent(
    *,
    intent_id: str | None = None,
    status: str = "requires_payment_method",
    amount: int = 1000,
    currency: str = "usd",
    metadata: dict[str, str] | None = None,
    last_payment_error: dict[str, Any] | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    intent = resource("payment_intent")
    intent_id = intent_id or new_id("pi")
    intent.update(
        id=intent_id,
        status=status,
        amount=amount,
        currency=currency,
        metadata=metadata or {},
        last_payment_error=last_payment_error,
        client_secret=f"{intent_id}_secret_{secrets.token_hex(12)}",
        created=created or int(time.time()),
        latest_charge=new_id("ch") if status in ("succeeded", "processing") else None,
    )
    return intent


def event(event_type: str, obj: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
    evt = resource("event")
    evt.update(
        id=new_id("evt"),
        type=event_type,
        created=created or int(time.time()),
        api_version="2025-10-29.clover",
        data={"object": obj},
    )
    return evt


def payment_failed(intent_id: str, card: str, *, created: int | None = None) -> dict[str, Any]:
    error = {**DECLINES[card], "charge": new_id("ch"), "payment_method": {"id": new_id("pm")}}
    intent = payment_intent(
        intent_id=intent_id, status="requires_payment_method", last_payment_error=error
    )
    return event("payment_intent.payment_failed", intent, created=created)


def signed(
    event_body: dict[str, Any] | str, secret: str, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = event_body if isinstance(event_body, str) else json.dumps(event_body)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)
    return body.encode(), {"Stripe-Signature": header, "Content-Type": "application/json"}
