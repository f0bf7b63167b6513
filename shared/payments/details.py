"""A payment with what followed it (its refunds, its dispute): what the API shows."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.models import Dispute, Payment, Refund
from shared.payments.after_payment import REFUND_COUNTS


@dataclass(frozen=True)
class PaymentDetails:
    payment: Payment
    refunds: list[Refund]
    # The latest dispute of the payment, if any.
    dispute: Dispute | None

    @property
    def amount_refunded(self) -> int:
        """Refunds not failed or canceled, as Stripe's charge.amount_refunded counts them."""
        return sum(refund.amount for refund in self.refunds if refund.status in REFUND_COUNTS)


def payment_details(session: Session, payment: Payment) -> PaymentDetails:
    refunds = list(
        session.execute(
            select(Refund)
            .where(Refund.payment_intent_id == payment.payment_intent_id)
            .order_by(Refund.created, Refund.created_at, Refund.id)
        ).scalars()
    )
    dispute = session.execute(
        select(Dispute)
        .where(Dispute.payment_intent_id == payment.payment_intent_id)
        .order_by(Dispute.created.desc(), Dispute.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return PaymentDetails(payment, refunds, dispute)


def find_payment_details(
    sessions: sessionmaker[Session], payment_intent_id: str
) -> PaymentDetails | None:
    """The payment with its refunds and latest dispute, read in one session; None when we do
    not know the PaymentIntent (refunds or disputes recorded before it are not a payment)."""
    with sessions() as session:
        payment = session.execute(
            select(Payment).where(Payment.payment_intent_id == payment_intent_id)
        ).scalar_one_or_none()
        return None if payment is None else payment_details(session, payment)
