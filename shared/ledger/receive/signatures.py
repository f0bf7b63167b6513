"""Verifying what arrives at ``POST /webhook`` before anything else touches it: the
``Stripe-Signature`` against every configured secret, then the event rules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import stripe

from shared.ledger.event_rules import EventScope, WebhookRejected, check_event
from shared.ledger.thin_events import check_thin_event, is_thin

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class VerifiedDelivery:
    event_id: str
    event_type: str
    # Index of the configured secret that matched: an operator rolling a secret watches for the
    # old one (index 1 and up) to fall out of use before removing it.
    secret_index: int
    event: dict[str, Any]


def verify_signature(
    body: str, header: str | None, secrets: tuple[str, ...], tolerance: int
) -> int:
    """Return the index of the first secret that signs ``body``; raise WebhookRejected if none."""
    if not header:
        raise WebhookRejected("signature_missing", "Stripe-Signature header is missing")
    if not any(part.strip().startswith("v1=") for part in header.split(",")):
        raise WebhookRejected("signature_invalid", "Stripe-Signature header has no v1 signature")
    stale = False
    for index, secret in enumerate(secrets):
        try:
            stripe.WebhookSignature.verify_header(body, header, secret, tolerance)
        except stripe.SignatureVerificationError as exc:
            # The SDK checks the signature before the timestamp, so this message means the
            # signature matched this secret and only the age is wrong.
            stale = stale or "tolerance" in str(exc)
            continue
        return index
    if stale:
        raise WebhookRejected("signature_expired", "Stripe-Signature timestamp is too old")
    raise WebhookRejected("signature_invalid", "Stripe-Signature does not match")


def parse_event_body(body: str) -> dict[str, Any]:
    """Check that a verified body is a Stripe event we can record."""
    try:
        event = json.loads(body)
    except ValueError:
        raise WebhookRejected("invalid_event", "body is not JSON") from None
    # A thin event (shared.ledger.thin_events) is queued as it came; the worker fetches its
    # object.
    return check_thin_event(event) if is_thin(event) else check_event(event)


def verify_delivery(
    body_bytes: bytes,
    header: str | None,
    secrets: tuple[str, ...],
    tolerance: int,
    scope: EventScope,
) -> VerifiedDelivery:
    """The delivery, verified and in scope; WebhookRejected (EventRefused when only the scope
    is wrong) otherwise."""
    try:
        body = body_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRejected("invalid_event", "body is not UTF-8") from None
    secret_index = verify_signature(body, header, secrets, tolerance)
    event = scope.check(parse_event_body(body))
    return VerifiedDelivery(event["id"], event["type"], secret_index, event)
