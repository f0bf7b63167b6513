"""Payments: creating PaymentIntents for callers, and following their status from Stripe.

``service`` owns creation (one PaymentIntent per caller and idempotency key, no lock held
across Stripe); ``ordering`` owns the rule that applies PaymentIntent events in any order;
``after_payment`` the rule for refunds and disputes; ``details`` reads a payment with them.
"""

from shared.payments.after_payment import apply_charge_refunds, apply_dispute, apply_refund
from shared.payments.details import PaymentDetails, find_payment_details, payment_details
from shared.payments.ordering import (
    STATUS_PRECEDENCE,
    TERMINAL_STATUSES,
    Decision,
    apply_payment_intent,
    decide,
    lifecycle_rank,
    should_apply,
)
from shared.payments.service import (
    IdempotencyConflict,
    IdempotencyKeyInUse,
    PaymentCreated,
    PaymentService,
    request_fingerprint,
)

__all__ = [
    "STATUS_PRECEDENCE",
    "TERMINAL_STATUSES",
    "Decision",
    "IdempotencyConflict",
    "IdempotencyKeyInUse",
    "PaymentCreated",
    "PaymentDetails",
    "PaymentService",
    "apply_charge_refunds",
    "apply_dispute",
    "apply_payment_intent",
    "apply_refund",
    "decide",
    "find_payment_details",
    "lifecycle_rank",
    "payment_details",
    "request_fingerprint",
    "should_apply",
]
