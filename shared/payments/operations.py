"""The operators' calls after a payment: refund, capture and cancel, each once per key.

Every call carries the operator's idempotency key to Stripe, scoped to the operation and the
PaymentIntent (``stripe_operation_key``), so a retry (of the API call or of the CLI command,
which share the scope) gets Stripe's first answer again and never refunds or captures twice,
and an operator's key can never meet a key of create-payment's. No transaction is open while
Stripe is called. Stripe's answer is then recorded by the same functions the webhooks use, under
the same ordering rule, so the ledger shows the operation at once and the events that follow
(or came first) converge to the same state.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.infra.stripe_gateway import STRIPE_REQUEST_ID, OperationsGateway
from shared.infra.timeutil import utc_from_timestamp
from shared.models import Payment
from shared.payments.after_payment import apply_refund
from shared.payments.details import PaymentDetails, find_payment_details
from shared.payments.ordering import TERMINAL_STATUSES, apply_payment_intent
from shared.validation import CancelRequest, CaptureRequest, RefundRequest

_NOT_TO_CANCEL = frozenset({"succeeded", "processing", "requires_capture", "canceled"})


def _request_id(answer: dict[str, Any]) -> str | None:
    value = answer.pop(STRIPE_REQUEST_ID, None)
    return value if isinstance(value, str) else None


class PaymentNotFound(Exception):
    """No payment with this PaymentIntent id in our ledger."""


@dataclass(frozen=True)
class OperationResult:
    # Stripe's answer: the Refund, or the PaymentIntent (without its client secret).
    stripe_object: dict[str, Any]
    # Our ledger's payment once the answer is recorded, with its refunds and dispute.
    details: PaymentDetails
    # Stripe's id of the request that answered (its Request-Id), for the audit trail.
    stripe_request_id: str | None = None

    @property
    def payment(self) -> Payment:
        return self.details.payment


def stripe_operation_key(operation: str, payment_intent_id: str, key: str) -> str:
    """The key sent to Stripe for an operator's key: one operation on one PaymentIntent, never
    one of create-payment's (``payments-...``), and within Stripe's 255 characters."""
    digest = hashlib.sha256(f"{operation}\x00{payment_intent_id}\x00{key}".encode()).hexdigest()
    return f"admin-{operation}-{digest}"


class PaymentOperations:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        gateway: OperationsGateway,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._sessions = sessions
        self._gateway = gateway
        self._now = clock

    def refund(self, payment_intent_id: str, request: RefundRequest, key: str) -> OperationResult:
        """Refund the amount asked (all that is left by default); Stripe refuses more."""
        self._known(payment_intent_id)
        refund = self._gateway.create_refund(
            payment_intent_id,
            amount=request.amount,
            reason=request.reason,
            idempotency_key=stripe_operation_key("refund", payment_intent_id, key),
        )
        request_id = _request_id(refund)
        # Recorded at once, under the rule its events follow too (refund.created, ...).
        with transaction(self._sessions) as session:
            apply_refund(
                session, refund, utc_from_timestamp(refund["created"]), self._gateway.current_refund
            )
        return self._result(refund, payment_intent_id, request_id)

    def capture(self, payment_intent_id: str, request: CaptureRequest, key: str) -> OperationResult:
        """Capture the amount asked (all that is capturable by default), the rest released."""
        self._known(payment_intent_id)
        intent = self._gateway.capture_payment_intent(
            payment_intent_id,
            amount=request.amount,
            idempotency_key=stripe_operation_key("capture", payment_intent_id, key),
        )
        return self._recorded(intent)

    def cancel(self, payment_intent_id: str, request: CancelRequest, key: str) -> OperationResult:
        """Cancel a payment that is not final yet (an authorisation held is released)."""
        self._known(payment_intent_id)
        intent = self._gateway.cancel_payment_intent(
            payment_intent_id,
            reason=request.reason,
            idempotency_key=stripe_operation_key("cancel", payment_intent_id, key),
        )
        return self._recorded(intent)

    def cancel_unless_paid(
        self, payment_intent_id: str, key: str, reason: str = "abandoned"
    ) -> OperationResult | None:
        """Cancel, unless Stripe says the payment is paid, on its way to it, authorized (the
        operators capture or cancel those), or canceled already: None then."""
        current = self._gateway.current_payment_intent(payment_intent_id)
        if current is None or current["status"] in _NOT_TO_CANCEL:
            return None
        return self.cancel(payment_intent_id, CancelRequest(reason=reason), key)

    def _recorded(self, intent: dict[str, Any]) -> OperationResult:
        request_id = _request_id(intent)
        # A PaymentIntent carries no time of its last change. A final status (captured,
        # canceled) is final under the ordering rule whenever it is applied, so it is recorded
        # as of now; any other (a capture still processing) is left to its events, which carry
        # their time.
        if intent["status"] in TERMINAL_STATUSES:
            with transaction(self._sessions) as session:
                apply_payment_intent(
                    session, intent, self._now(), self._gateway.current_payment_intent
                )
        return self._result(intent, intent["id"], request_id)

    def _result(
        self, stripe_object: dict[str, Any], payment_intent_id: str, request_id: str | None
    ) -> OperationResult:
        details = find_payment_details(self._sessions, payment_intent_id)
        if details is None:
            raise PaymentNotFound(payment_intent_id)
        return OperationResult(stripe_object, details, request_id)

    def _known(self, payment_intent_id: str) -> Payment:
        with self._sessions() as session:
            payment = session.execute(
                select(Payment).where(Payment.payment_intent_id == payment_intent_id)
            ).scalar_one_or_none()
        if payment is None:
            raise PaymentNotFound(payment_intent_id)
        return payment
