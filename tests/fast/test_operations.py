"""The operators' refund, capture and cancel called directly: the key Stripe gets, the payment
they need, and how Stripe's answer is recorded. Stripe here is a stand-in object that answers as
Stripe's API does; the stand-in server is exercised by
tests/integration/test_payment_operations.py."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
import stripe
from sqlalchemy import select

from shared.models import Payment
from shared.payments import apply_payment_intent
from shared.payments.operations import PaymentNotFound, PaymentOperations, stripe_operation_key
from shared.validation import CancelRequest, CaptureRequest, RefundRequest

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(minutes=5)
_ids = itertools.count(1)


class AnsweringStripe:
    """Answers each call as Stripe would, and remembers the calls made."""

    def __init__(self, intent_status: str = "succeeded") -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.intent_status = intent_status
        self.refuse: Exception | None = None

    def _call(self, name: str, payment_intent_id: str, **params: Any) -> None:
        self.calls.append((name, payment_intent_id, params))
        if self.refuse is not None:
            raise self.refuse

    def create_refund(self, payment_intent_id: str, **params: Any) -> dict[str, Any]:
        self._call("refund", payment_intent_id, **params)
        return {
            "id": f"re_fast{next(_ids)}",
            "object": "refund",
            "amount": params["amount"] or 1000,
            "currency": "usd",
            "status": "succeeded",
            "reason": params["reason"],
            "payment_intent": payment_intent_id,
            "charge": "ch_fast",
            "created": int(T0.timestamp()) + 60,
        }

    def _intent(self, payment_intent_id: str, status: str, **amounts: int) -> dict[str, Any]:
        return {
            "id": payment_intent_id,
            "object": "payment_intent",
            "amount": 1000,
            "currency": "usd",
            "status": status,
            "capture_method": "manual",
            "metadata": {},
            **amounts,
        }

    def capture_payment_intent(self, payment_intent_id: str, **params: Any) -> dict[str, Any]:
        self._call("capture", payment_intent_id, **params)
        received = params["amount"] or 1000
        return self._intent(payment_intent_id, self.intent_status, amount_received=received)

    def cancel_payment_intent(self, payment_intent_id: str, **params: Any) -> dict[str, Any]:
        self._call("cancel", payment_intent_id, **params)
        return self._intent(payment_intent_id, "canceled", amount_received=0)

    def current_payment_intent(self, payment_intent_id: str) -> dict[str, Any] | None:
        return None

    def current_refund(self, refund_id: str) -> dict[str, Any] | None:
        return None


def known_payment(db, status: str = "requires_capture") -> str:
    payment_intent_id = f"pi_fast_op{next(_ids)}"
    intent = {"id": payment_intent_id, "status": status, "amount": 1000, "currency": "usd"}
    with db.begin() as session:
        apply_payment_intent(session, intent, T0)
    return payment_intent_id


def stored(db, payment_intent_id: str) -> Payment:
    with db() as session:
        return session.execute(
            select(Payment).where(Payment.payment_intent_id == payment_intent_id)
        ).scalar_one()


def operations(db, gateway: AnsweringStripe) -> PaymentOperations:
    return PaymentOperations(db, gateway, clock=lambda: NOW)


def test_the_key_stripe_gets_names_one_operation_on_one_payment():
    key = stripe_operation_key("refund", "pi_1", "k")
    others = {
        stripe_operation_key("capture", "pi_1", "k"),
        stripe_operation_key("refund", "pi_2", "k"),
        stripe_operation_key("refund", "pi_1", "k2"),
    }
    assert key.startswith("admin-refund-") and key not in others and len(others) == 3
    # Never one of create-payment's keys, and within Stripe's 255 characters for any key of ours.
    assert not key.startswith("payments-")
    assert len(stripe_operation_key("refund", "pi_" + "x" * 250, "k" * 255)) <= 255
    assert stripe_operation_key("refund", "pi_1", "k") == key


@pytest.mark.parametrize(
    ("operation", "request_"),
    [("refund", RefundRequest()), ("capture", CaptureRequest()), ("cancel", CancelRequest())],
)
def test_a_payment_we_do_not_know_is_not_sent_to_stripe(db, operation, request_):
    gateway = AnsweringStripe()

    with pytest.raises(PaymentNotFound):
        getattr(operations(db, gateway), operation)("pi_unknown", request_, "k")

    assert gateway.calls == []


def test_a_refund_goes_to_stripe_with_the_scoped_key_and_is_recorded(db):
    payment_intent_id = known_payment(db, "succeeded")
    gateway = AnsweringStripe()

    result = operations(db, gateway).refund(
        payment_intent_id, RefundRequest(300, "duplicate"), "op-1"
    )

    assert gateway.calls == [
        (
            "refund",
            payment_intent_id,
            {
                "amount": 300,
                "reason": "duplicate",
                "idempotency_key": stripe_operation_key("refund", payment_intent_id, "op-1"),
            },
        )
    ]
    assert result.stripe_object["amount"] == 300
    assert result.payment.payment_intent_id == payment_intent_id
    assert result.payment.status == "succeeded"


def test_a_capture_stripe_answered_is_recorded_at_once(db):
    payment_intent_id = known_payment(db)
    gateway = AnsweringStripe()

    result = operations(db, gateway).capture(payment_intent_id, CaptureRequest(600), "op-2")

    assert gateway.calls[0][2] == {
        "amount": 600,
        "idempotency_key": stripe_operation_key("capture", payment_intent_id, "op-2"),
    }
    assert result.payment.status == "succeeded"
    assert (stored(db, payment_intent_id).status, stored(db, payment_intent_id).status_as_of) == (
        "succeeded",
        NOW,
    )


def test_a_capture_still_processing_is_left_to_its_events(db):
    payment_intent_id = known_payment(db)

    result = operations(db, AnsweringStripe("processing")).capture(
        payment_intent_id, CaptureRequest(), "op-3"
    )

    assert result.stripe_object["status"] == "processing"
    assert stored(db, payment_intent_id).status == "requires_capture"


def test_a_cancel_is_recorded_and_final(db):
    payment_intent_id = known_payment(db, "requires_payment_method")
    gateway = AnsweringStripe()

    result = operations(db, gateway).cancel(payment_intent_id, CancelRequest("abandoned"), "op-4")

    assert gateway.calls[0][2]["reason"] == "abandoned"
    assert result.payment.status == "canceled"
    # A late event of the state before cannot bring it back.
    with db.begin() as session:
        late = {"id": payment_intent_id, "status": "requires_payment_method", "amount": 1000}
        assert not apply_payment_intent(session, {**late, "currency": "usd"}, NOW)
    assert stored(db, payment_intent_id).status == "canceled"


def test_stripes_refusal_records_nothing(db):
    payment_intent_id = known_payment(db, "succeeded")
    gateway = AnsweringStripe()
    gateway.refuse = stripe.InvalidRequestError(
        "Refund amount is greater than unrefunded amount", "amount", code="amount_too_large"
    )

    with pytest.raises(stripe.InvalidRequestError):
        operations(db, gateway).refund(payment_intent_id, RefundRequest(5000), "op-5")

    assert stored(db, payment_intent_id).status == "succeeded"
