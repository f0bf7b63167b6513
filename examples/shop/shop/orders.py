"""The shop's orders: one per PaymentIntent, paid when Stripe says so and the amount matches."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Order:
    id: int
    payment_intent_id: str
    amount: int
    currency: str
    email: str
    status: str


def create_order(
    session: Session, payment_intent_id: str, amount: int, currency: str, email: str
) -> int:
    """The order the shop made before sending its customer to pay (create-payment)."""
    return int(
        session.execute(
            text(
                "INSERT INTO shop_orders (payment_intent_id, amount, currency, email) "
                "VALUES (:pi, :amount, :currency, :email) RETURNING id"
            ),
            {"pi": payment_intent_id, "amount": amount, "currency": currency, "email": email},
        ).scalar_one()
    )


def order_paid_by(session: Session, payment_intent_id: str) -> Order | None:
    row = session.execute(
        text(
            "SELECT id, payment_intent_id, amount, currency, email, status FROM shop_orders "
            "WHERE payment_intent_id = :pi FOR UPDATE"
        ),
        {"pi": payment_intent_id},
    ).one_or_none()
    return Order(*row) if row else None


def set_status(session: Session, order_id: int, status: str) -> None:
    session.execute(
        text(
            "UPDATE shop_orders SET status = :status, "
            "paid_at = CASE WHEN :status = 'paid' THEN now() END WHERE id = :id"
        ),
        {"status": status, "id": order_id},
    )
