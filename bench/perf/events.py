"""Signed, Stripe-shaped `payment_intent.succeeded` deliveries of about 2 KB for `make bench`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools import stripe_events

EVENT_TYPE = "payment_intent.succeeded"
TARGET_BYTES = 2048


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery: the event id, its JSON body and its Stripe-Signature header."""

    event_id: str
    body: str
    signature: str

    def http_request(self, host: str, path: str = "/webhook") -> bytes:
        """The whole HTTP/1.1 request, keep-alive, as raw bytes."""
        body = self.body.encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Stripe-Signature: {self.signature}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


def event_body() -> tuple[str, str]:
    """A new `payment_intent.succeeded` event (its own PaymentIntent), padded to ~2 KB."""
    intent = stripe_events.payment_intent(status="succeeded", metadata={"orderId": "bench"})
    event: dict[str, Any] = stripe_events.event(EVENT_TYPE, intent)
    size = len(json.dumps(event))
    intent["metadata"]["note"] = "x" * max(0, TARGET_BYTES - size - len(', "note": ""'))
    return event["id"], json.dumps(event)


def bodies(count: int) -> list[tuple[str, str]]:
    return [event_body() for _ in range(count)]


def sign(events: list[tuple[str, str]], secret: str) -> list[Delivery]:
    """Sign every body now: a fresh timestamp, well inside the receiver's tolerance."""
    now = int(time.time())
    deliveries = []
    for event_id, body in events:
        _, headers = stripe_events.signed(body, secret, timestamp=now)
        deliveries.append(Delivery(event_id, body, headers["Stripe-Signature"]))
    return deliveries


def write_for_wrk(deliveries: list[Delivery], path: Path) -> Path:
    """Two lines per delivery, the signature header then the one-line JSON body."""
    path.write_text("".join(f"{d.signature}\n{d.body}\n" for d in deliveries))
    return path
