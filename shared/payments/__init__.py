"""Payments: creating PaymentIntents for callers, and following their status from Stripe.

``service`` owns creation (one PaymentIntent per caller and idempotency key, no lock held
across Stripe); ``ordering`` owns the rule that applies PaymentIntent events in any order.
"""

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
    "PaymentService",
    "apply_payment_intent",
    "decide",
    "lifecycle_rank",
    "request_fingerprint",
    "should_apply",
]
