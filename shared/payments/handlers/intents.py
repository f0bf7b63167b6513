"""Handlers that keep ``payments`` in step with Stripe's PaymentIntents."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from shared.ledger.handlers.registry import EventView, registry
from shared.observability.logs import bind
from shared.payments import apply_payment_intent
from shared.payments.card_testing import checkout_session_of, record_failed_attempt

log = logging.getLogger(__name__)

PAYMENT_INTENT_EVENTS = (
    "payment_intent.created",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    # A manual-capture payment authorized (requires_capture, amount_capturable set).
    "payment_intent.amount_capturable_updated",
    # Customer balance payments funded in part (status stays requires_action).
    "payment_intent.partially_funded",
)


@registry.handles(*PAYMENT_INTENT_EVENTS, name="payments.sync_payment_intent")
def sync_payment_intent(session: Session, event: EventView) -> None:
    # The event's object is the PaymentIntent as it was when the event happened; its status is
    # Stripe's word for that moment, whichever event type carried it.
    bind(payment_intent_id=event.object.get("id"))
    current = None if event.stripe is None else event.stripe.current_payment_intent
    apply_payment_intent(session, event.object, as_of=event.created, fetch_current=current)


@registry.handles("payment_intent.payment_failed", name="payments.checkout_failed_attempts")
def count_checkout_failed_attempt(session: Session, event: EventView) -> None:
    # Only a checkout session's PaymentIntent: a back end's own payments are its business.
    checkout_session = checkout_session_of(event.payments_caller)
    if checkout_session is not None and record_failed_attempt(session, checkout_session):
        log.warning("checkout session %s ended: too many failed attempts", checkout_session)
