"""Rows of checkout sessions and their payments, as the fast layer's tests set them up."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shared.models import CheckoutSession, Payment


def checkout_session(session_id: str, **fields: Any) -> CheckoutSession:
    """A 1000 usd session a back end made; ``fields`` set its times, limit and state."""
    return CheckoutSession(
        id=session_id,
        created_by="client:shop",
        amount=1000,
        currency="usd",
        metadata_={},
        **fields,
    )


def add_session_payment(session: Session, session_id: str, payment_intent_id: str) -> None:
    """The session's PaymentIntent, created and not paid yet."""
    session.add(
        Payment(
            payment_intent_id=payment_intent_id,
            amount=1000,
            currency="usd",
            status="requires_payment_method",
            caller=f"session:{session_id}",
            idempotency_key=session_id,
        )
    )
