"""Property tests: the signature header parser, the validators and the redaction filter hold
their contracts for any input hypothesis can think of."""

from __future__ import annotations

import time

import stripe
from hypothesis import given
from hypothesis import strategies as st

from shared.ledger.event_rules import WebhookRejected
from shared.ledger.receive.signatures import verify_signature
from shared.observability.redaction import contains_card_number, redact
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


# (network prefix, length) of cards as issued: Visa, Mastercard, Amex, Discover, JCB, Diners,
# UnionPay, Maestro.
NETWORKS = [("4", 16), ("4", 13), ("4", 19), ("51", 16), ("55", 16), ("2221", 16), ("2720", 16),
            ("34", 15), ("37", 15), ("6011", 16), ("65", 19), ("3528", 16), ("36", 14),
            ("62", 17), ("50", 12)]  # fmt: skip


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    prefix, length = draw(st.sampled_from(NETWORKS))
    body = draw(st.text(alphabet="0123456789", min_size=length - len(prefix) - 1,
                        max_size=length - len(prefix) - 1))  # fmt: skip
    return _luhn_complete(prefix + body)


NOT_A_NUMBER_END = st.text(
    alphabet=st.characters(blacklist_categories=["Nd"], blacklist_characters="_.,"), max_size=20
)


@given(
    number=card_numbers(),
    before=NOT_A_NUMBER_END,
    # A card is often followed by its expiry or CVC: digits right after it, or after a space.
    after=st.one_of(NOT_A_NUMBER_END, st.from_regex(r"\A[ -]?[0-9]{2,4}( [0-9]{2,4})?\Z")),
)
def test_any_card_number_is_masked(number, before, after):
    masked = redact(f"{before}{number}{after}")
    assert number not in masked
    # With digits glued on, a shorter card can read as a longer one: which 4 show may differ.
    shown = "[card ****" if after[:1].isdigit() else f"[card ****{number[-4:]}]"
    assert shown in masked
    assert contains_card_number(f"{before}{number}{after}")


@given(
    number=card_numbers().filter(lambda n: len(n) == 16),
    separator=st.sampled_from([" ", "  ", "-", ".", "/", "_"]),
)
def test_cards_are_masked_in_every_common_separator_style(number, separator):
    written = separator.join(number[i : i + 4] for i in range(0, 16, 4))
    masked = redact(f"card: {written} exp 12/34")
    assert f"[card ****{number[-4:]}]" in masked
    assert contains_card_number(written)


@given(
    text=st.one_of(
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.floats(min_value=0, max_value=100).map(lambda f: f"succeeded in {f!r}s"),
        st.integers(1_000_000_000, 1_999_999_999).map(str),  # epoch seconds
        st.integers(10**12, 2 * 10**12 - 1).map(str),  # milliseconds
        st.integers(10**15, 2 * 10**15 - 1).map(str),  # microseconds
        st.integers(10**18, 2 * 10**18 - 1).map(str),  # nanoseconds
        st.uuids().map(str),
        st.from_regex(r"\A(evt|pi|ch|re|cus|acct)_[0-9A-Za-z]{14,28}\Z"),
        st.integers(10**12, 10**19).map(lambda n: f"0.{n}"),  # a long fraction
    )
)
def test_ordinary_numbers_timestamps_and_ids_stay_intact(text):
    assert redact(text) == text


def test_a_huge_digit_run_is_scanned_in_linear_time():
    import time

    started = time.perf_counter()
    redact("4" * 500_000)
    contains_card_number("1" * 500_000)
    assert time.perf_counter() - started < 1.0


def test_huge_metadata_is_refused_by_its_length_before_any_scan():
    import time

    import pytest

    from shared.validation import ValidationError, validate_payment_request

    started = time.perf_counter()
    with pytest.raises(ValidationError) as refused:
        validate_payment_request(
            {"amount": 1000, "currency": "usd", "metadata": {"note": "4" * 500_000}}
        )
    assert "at most" in refused.value.message
    assert time.perf_counter() - started < 1.0
