"""The operators' request bodies (refund, capture, cancel), their required Idempotency-Key, and
create-payment's captureMethod, which changes no fingerprint of a request that does not send it."""

from __future__ import annotations

import hashlib

import pytest

from shared.payments import request_fingerprint
from shared.validation import (
    CancelRequest,
    CaptureRequest,
    PaymentRequest,
    RefundRequest,
    ValidationError,
    validate_cancel_request,
    validate_capture_request,
    validate_payment_request,
    validate_refund_request,
    validate_required_idempotency_key,
)


def test_a_fingerprint_without_capture_method_is_the_one_stored_before_it_existed():
    request = validate_payment_request({"amount": 1000, "currency": "usd", "metadata": {"a": "b"}})
    # The canonical JSON every stored fingerprint was computed from, before captureMethod.
    before = '{"amount":1000,"currency":"usd","metadata":{"a":"b"}}'
    assert request.capture_method is None
    assert request_fingerprint(request) == hashlib.sha256(before.encode()).hexdigest()


def test_a_capture_method_given_is_part_of_the_fingerprint():
    body = {"amount": 1000, "currency": "usd"}
    plain = validate_payment_request(body)
    manual = validate_payment_request({**body, "captureMethod": "manual"})
    automatic = validate_payment_request({**body, "captureMethod": "automatic"})
    assert (manual.capture_method, automatic.capture_method) == ("manual", "automatic")
    fingerprints = {request_fingerprint(r) for r in (plain, manual, automatic)}
    assert len(fingerprints) == 3
    # null reads as not given, like metadata's.
    unsaid = validate_payment_request({**body, "captureMethod": None})
    assert request_fingerprint(unsaid) == request_fingerprint(plain)


@pytest.mark.parametrize("value", ["Manual", "automatic_async", "", 1, True, ["manual"]])
def test_an_unknown_capture_method_is_refused_by_name(value):
    with pytest.raises(ValidationError) as refused:
        validate_payment_request({"amount": 1000, "currency": "usd", "captureMethod": value})
    assert refused.value.field == "captureMethod"


def test_capture_method_is_stated_once_in_the_canonical_request():
    request = PaymentRequest(1000, "usd", {}, capture_method="manual")
    assert request.canonical() == {
        "amount": 1000, "currency": "usd", "metadata": {}, "captureMethod": "manual"
    }  # fmt: skip


def test_operation_bodies_are_read_with_their_defaults():
    assert validate_refund_request(None) == RefundRequest()
    assert validate_refund_request({}) == RefundRequest()
    assert validate_refund_request({"amount": 300, "reason": "duplicate"}) == RefundRequest(
        300, "duplicate"
    )
    assert validate_refund_request({"amount": None, "reason": None}) == RefundRequest()
    assert validate_capture_request({"amount": 99_999_999}) == CaptureRequest(99_999_999)
    assert validate_capture_request(None) == CaptureRequest()
    assert validate_cancel_request({"reason": "abandoned"}) == CancelRequest("abandoned")
    assert validate_cancel_request(None) == CancelRequest()


@pytest.mark.parametrize(
    ("validate", "body", "field"),
    [
        (validate_refund_request, [], "body"),
        (validate_refund_request, "refund", "body"),
        (validate_refund_request, {"amount": 0}, "amount"),
        (validate_refund_request, {"amount": -1}, "amount"),
        (validate_refund_request, {"amount": 100_000_000}, "amount"),
        (validate_refund_request, {"amount": 10.5}, "amount"),
        (validate_refund_request, {"amount": "500"}, "amount"),
        (validate_refund_request, {"amount": True}, "amount"),
        (validate_refund_request, {"reason": "abandoned"}, "reason"),
        (validate_refund_request, {"reason": "expired_uncaptured_charge"}, "reason"),
        (validate_refund_request, {"amount": 5, "metadata": {}}, "metadata"),
        (validate_refund_request, {"": 1}, '""'),
        (validate_capture_request, {"amount": 0}, "amount"),
        (validate_capture_request, {"amount_to_capture": 5}, "amount_to_capture"),
        (validate_capture_request, {"reason": "duplicate"}, "reason"),
        (validate_cancel_request, {"reason": "automatic"}, "reason"),
        (validate_cancel_request, {"amount": 5}, "amount"),
        (validate_cancel_request, 7, "body"),
    ],
)
def test_a_bad_operation_body_names_its_field(validate, body, field):
    with pytest.raises(ValidationError) as refused:
        validate(body)
    assert refused.value.field == field


def test_an_operation_needs_a_valid_idempotency_key():
    assert validate_required_idempotency_key(" refund-42 ") == "refund-42"
    for value in (None, "", "   ", "k" * 256, "clé", "tab\tkey"):
        with pytest.raises(ValidationError) as refused:
            validate_required_idempotency_key(value)
        assert refused.value.field == "Idempotency-Key"
