"""Handlers that follow a payment after it is paid: its refunds and its dispute.

Each keeps its own row per Stripe object (shared.payments.after_payment) under the ordering
rule there, so duplicated, late and out-of-order deliveries converge to Stripe's state. They need
no payment row: a refund or dispute event delivered before the payment's own is recorded all the
same, and the payment's view joins them by PaymentIntent id.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from shared.ledger.handlers.registry import EventView, registry
from shared.observability.logs import bind
from shared.payments.after_payment import apply_charge_refunds, apply_dispute, apply_refund

REFUND_EVENTS = ("refund.created", "refund.updated", "refund.failed")
DISPUTE_EVENTS = (
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
)


@registry.handles(*REFUND_EVENTS, "charge.refunded", name="payments.sync_refunds")
def sync_refunds(session: Session, event: EventView) -> None:
    bind(payment_intent_id=event.object.get("payment_intent"))
    fetch = None if event.stripe is None else event.stripe.current_refund
    if event.type == "charge.refunded":
        # The Charge: its refunds where the API version still lists them (each also comes with
        # its own refund.* events), and the PaymentIntent that refunds without one belong to.
        apply_charge_refunds(session, event.object, event.created, fetch)
    else:
        apply_refund(session, event.object, event.created, fetch)


@registry.handles(*DISPUTE_EVENTS, name="payments.sync_dispute")
def sync_dispute(session: Session, event: EventView) -> None:
    bind(payment_intent_id=event.object.get("payment_intent"))
    fetch = None if event.stripe is None else event.stripe.current_dispute
    funds = event.type.rpartition(".funds_")[2] if ".funds_" in event.type else None
    apply_dispute(session, event.object, event.created, fetch, funds=funds)
