"""Property tests: the signature header parser, the validators and the redaction filter hold
their contracts for any input hypothesis can think of."""

from __future__ import annotations

import time

import stripe
from hypothesis import given
from hypothesis import strategies as st

from shared.ledger.webhooks import WebhookRejected, verify_signature
from shared.redaction import redact
from shared.validation import (
    MAX_AMOUNT,
    SUPPORTED_CURRENCIES,
    ValidationError,
    validate_idempotency_key,
    validate_payment_request,
)

SECRET = "whsec_property_" + "p" * 20
OTHER = "whsec_property_" + "q" * 20
TOLERANCE = 300

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)


@given(header=st.one_of(st.none(), st.text()), body=st.text())
def test_any_header_is_either_verified_or_rejected_cleanly(header, body):
    try:
        index = verify_signature(body, header, (SECRET,), TOLERANCE)
    except WebhookRejected as exc:
        assert exc.code in {"signature_missing", "signature_invalid", "signature_expired"}
    else:
        # Verifying by chance would mean forging HMAC-SHA256.
        raise AssertionError(f"random header {header!r} verified as secret {index}")


@given(
    body=st.text(), extra=st.lists(st.sampled_from(["v0=abc", "v1=deadbeef", "x=1"]), max_size=3)
)
def test_a_genuine_signature_verifies_among_noise(body, extra):
    header = stripe.WebhookSignature.generate_signature_header(body, SECRET)
    noisy = ",".join([*extra, header])
    assert verify_signature(body, noisy, (OTHER, SECRET), TOLERANCE) == 1


@given(body=st.text(), position=st.integers(min_value=0, max_value=63))
def test_any_altered_signature_is_rejected(body, position):
    header = stripe.WebhookSignature.generate_signature_header(body, SECRET)
    timestamp, signature = header.split(",")
    digits = list(signature.removeprefix("v1="))
    digits[position] = "0" if digits[position] != "0" else "1"
    altered = f"{timestamp},v1={''.join(digits)}"
    try:
        verify_signature(body, altered, (SECRET,), TOLERANCE)
    except WebhookRejected as exc:
        assert exc.code == "signature_invalid"
    else:
        raise AssertionError("an altered signature verified")


@given(body=st.text(), age=st.integers(min_value=TOLERANCE + 2, max_value=10**8))
def test_old_timestamps_are_rejected_as_expired(body, age):
    header = stripe.WebhookSignature.generate_signature_header(
        body, SECRET, timestamp=int(time.time()) - age
    )
    try:
        verify_signature(body, header, (SECRET,), TOLERANCE)
    except WebhookRejected as exc:
        assert exc.code == "signature_expired"
    else:
        raise AssertionError("a stale signature verified")


@given(
    body=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"amount": json_values, "currency": json_values},
            optional={"metadata": json_values},
        ),
        st.fixed_dictionaries(
            {
                "amount": st.integers(min_value=-10, max_value=MAX_AMOUNT + 10),
                "currency": st.sampled_from([*sorted(SUPPORTED_CURRENCIES), "USD", "xx", ""]),
            },
            optional={
                "metadata": st.dictionaries(
                    st.text(max_size=45), st.text(max_size=510), max_size=52
                )
            },
        ),
    )
)
def test_payment_validator_accepts_only_what_stripe_would(body):
    try:
        request = validate_payment_request(body)
    except ValidationError as exc:
        assert exc.field
        assert exc.message
        return
    assert type(request.amount) is int
    assert 1 <= request.amount <= MAX_AMOUNT
    assert request.currency in SUPPORTED_CURRENCIES
    assert len(request.metadata) <= 50
    for key, value in request.metadata.items():
        assert isinstance(key, str) and 1 <= len(key) <= 40
        assert isinstance(value, str) and len(value) <= 500
        assert "\x00" not in key + value


@given(st.one_of(st.none(), st.text(max_size=300)))
def test_idempotency_key_validator(value):
    try:
        key = validate_idempotency_key(value)
    except ValidationError as exc:
        assert exc.field == "Idempotency-Key"
        return
    if value is None:
        assert key is None
    else:
        assert key is not None and 1 <= len(key) <= 255 and key.isascii()


def _luhn_complete(prefix: str) -> str:
    for check in "0123456789":
        number = prefix + check
        total = 0
        for index, char in enumerate(reversed(number)):
            digit = int(char) * (2 if index % 2 else 1)
            total += digit - 9 if digit > 9 else digit
        if total % 10 == 0:
            return number
    raise AssertionError("unreachable")


@given(
    prefix=st.text(alphabet="0123456789", min_size=12, max_size=18),
    before=st.text(alphabet=st.characters(blacklist_categories=["Nd"]), max_size=20),
    # A card is often followed by its expiry or CVC: digits right after it, or after a space.
    after=st.one_of(
        st.text(alphabet=st.characters(blacklist_categories=["Nd"]), max_size=20),
        st.from_regex(r"\A[ -]?[0-9]{2,4}( [0-9]{2,4})?\Z"),
    ),
)
def test_any_card_number_is_masked(prefix, before, after):
    number = _luhn_complete(prefix)
    masked = redact(f"{before}{number}{after}")
    assert number not in masked
    # Which 4 digits it shows depends on where the digits around it let a card end.
    assert "[card ****" in masked
