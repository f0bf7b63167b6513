"""The shop's handlers: what it does when Stripe says something happened.

- ``payment_intent.succeeded``: the order is paid, if Stripe received what it asked (amount and
  currency); then a receipt is emailed, once, through the outbox.
- ``charge.dispute.created``: the shop's own webhook (SHOP_DISPUTE_WEBHOOK_URL) hears of it, once.
"""

from __future__ import annotations

import os
from typing import cast

import stripe
from sqlalchemy.orm import Session

from shared.ledger.handlers import EventView, registry
from shop.orders import order_paid_by, set_status


@registry.handles("payment_intent.succeeded", name="shop.mark_paid")
def mark_paid(session: Session, event: EventView) -> None:
    intent = cast(stripe.PaymentIntent, event.stripe_object)
    order = order_paid_by(session, intent.id)
    if order is None or order.status == "paid":
        return  # not one of the shop's, or paid already (a redelivery changes nothing)
    if (intent.amount_received, intent.currency) != (order.amount, order.currency):
        # Paid, but not what the order costs: a person looks; no receipt goes out.
        set_status(session, order.id, "amount_mismatch")
        return
    set_status(session, order.id, "paid")
    assert event.effects is not None
    event.effects.email(
        "receipt",
        order.email,
        f"Receipt for order {order.id}",
        f"We received {order.amount} {order.currency.upper()} for order {order.id}. Thank you.",
    )


@registry.handles("charge.dispute.created", name="shop.dispute_alert")
def dispute_alert(session: Session, event: EventView) -> None:
    url = os.environ.get("SHOP_DISPUTE_WEBHOOK_URL")
    if not url:
        return
    dispute = cast(stripe.Dispute, event.stripe_object)
    assert event.effects is not None
    event.effects.http(
        "dispute-alert",
        url,
        {"dispute": dispute.id, "charge": dispute.charge, "amount": dispute.amount},
    )
