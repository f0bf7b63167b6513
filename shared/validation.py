"""Validation of the create-payment request and of the operators' refund, capture and cancel
requests, with Stripe's own limits.

Every error names the field it is about, so a client can show it next to the right input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.currencies import WHOLE_UNITS_ONLY, smallest_unit
from shared.observability.redaction import contains_card_number

# Stripe's largest amount for a PaymentIntent, in minor units (eight digits).
MAX_AMOUNT = 99_999_999
# Stripe allows 50 keys; the one we add to every PaymentIntent (CALLER_METADATA_KEY) is the 50th.
MAX_METADATA_KEYS = 49
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# Who made a PaymentIntent, in its Stripe metadata: "client:<name>" or "session:<id>". Ours only.
CALLER_METADATA_KEY = "payments_caller"
# How long a checkout session may be paid: a day unless its creator says, at most a week.
DEFAULT_CHECKOUT_SESSION_SECONDS = 24 * 3600
MAX_CHECKOUT_SESSION_SECONDS = 7 * 24 * 3600
MIN_CHECKOUT_SESSION_SECONDS = 60

# Currencies Stripe can charge in (presentment currencies for card payments).
SUPPORTED_CURRENCIES = frozenset(
    """
    usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bif bmd bnd bob brl bsd bwp byn
    bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd
    gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jpy kes kgs khr kmf krw kyd kzt lak lbp lkr
    lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd pab pen
    pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek sgd shp sle sos srd std szl thb tjs
    top try ttd twd tzs uah ugx uyu uzs vnd vuv wst xaf xcd xof xpf yer zar zmw
    """.split()
)

# Stripe's minimum charge per currency, in minor units; others default to the usd-equivalent
# floor Stripe applies at confirmation (we only pre-check the ones Stripe documents).
MINIMUM_AMOUNTS = {
    "usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50, "czk": 1500,
    "dkk": 250, "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500, "inr": 50, "jpy": 50, "mxn": 1000,
    "myr": 200, "nok": 300, "nzd": 50, "pln": 200, "ron": 200, "sek": 300, "sgd": 50, "thb": 1000,
}  # fmt: skip

ALLOWED_FIELDS = frozenset({"amount", "currency", "metadata", "captureMethod"})
CHECKOUT_SESSION_FIELDS = ALLOWED_FIELDS | {"expiresInSeconds"}
CAPTURE_METHODS = ("automatic", "manual")
# The reasons Stripe accepts from a caller (Stripe sets others itself).
REFUND_REASONS = ("requested_by_customer", "duplicate", "fraudulent")
CANCELLATION_REASONS = ("abandoned", "duplicate", "fraudulent", "requested_by_customer")


class ValidationError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class PaymentRequest:
    amount: int
    currency: str
    metadata: dict[str, str]
    # None when the request did not say: Stripe's default, and no part of the fingerprint, so the
    # fingerprints of requests from before captureMethod existed stay what they were.
    capture_method: str | None = None

    def canonical(self) -> dict[str, Any]:
        canonical: dict[str, Any] = {
            "amount": self.amount,
            "currency": self.currency,
            "metadata": self.metadata,
        }
        if self.capture_method is not None:
            canonical["captureMethod"] = self.capture_method
        return canonical


def validate_payment_request(body: Any) -> PaymentRequest:
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    unknown = sorted(set(body) - ALLOWED_FIELDS)
    if unknown:
        # An empty key must still name something a person can see.
        raise ValidationError(unknown[0] or '""', "is not a known field")
    return PaymentRequest(
        amount=_amount(body.get("amount"), body.get("currency")),
        currency=_currency(body.get("currency")),
        metadata=_metadata(body.get("metadata")),
        capture_method=_choice(body, "captureMethod", CAPTURE_METHODS),
    )


@dataclass(frozen=True)
class CheckoutOrder:
    """What the merchant's back end asks a checkout session to charge."""

    payment: PaymentRequest
    expires_in_seconds: int


def validate_checkout_session_request(body: Any) -> CheckoutOrder:
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    fields = dict(body)
    lifetime = fields.pop("expiresInSeconds", None)
    return CheckoutOrder(validate_payment_request(fields), _lifetime(lifetime))


def _lifetime(value: Any) -> int:
    if value is None:
        return DEFAULT_CHECKOUT_SESSION_SECONDS
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("expiresInSeconds", "must be an integer number of seconds")
    if not MIN_CHECKOUT_SESSION_SECONDS <= value <= MAX_CHECKOUT_SESSION_SECONDS:
        raise ValidationError(
            "expiresInSeconds",
            f"must be between {MIN_CHECKOUT_SESSION_SECONDS} and {MAX_CHECKOUT_SESSION_SECONDS}",
        )
    return value


def _choice(body: dict[str, Any], field: str, choices: tuple[str, ...]) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if value not in choices:
        raise ValidationError(field, "must be one of " + ", ".join(choices))
    return str(value)


def _currency(value: Any) -> str:
    if value is None:
        raise ValidationError("currency", "is required")
    if not isinstance(value, str) or value != value.lower() or len(value) != 3:
        raise ValidationError("currency", "must be a lowercase three-letter ISO code, like usd")
    if value not in SUPPORTED_CURRENCIES:
        raise ValidationError("currency", f"{value} is not a currency Stripe supports")
    return value


def _amount(value: Any, currency: Any) -> int:
    if value is None:
        raise ValidationError("amount", "is required")
    known = currency if isinstance(currency, str) and currency in SUPPORTED_CURRENCIES else None
    # bool is an int in Python; JSON true is not an amount.
    if isinstance(value, bool) or not isinstance(value, int):
        unit = smallest_unit(known) if known else "the currency's smallest unit"
        raise ValidationError("amount", f"must be an integer in {unit}")
    if value <= 0:
        raise ValidationError("amount", "must be positive")
    if value > MAX_AMOUNT:
        raise ValidationError("amount", f"must be at most {MAX_AMOUNT}")
    if known is None:
        return value
    minimum = MINIMUM_AMOUNTS.get(known)
    if minimum is not None and value < minimum:
        raise ValidationError("amount", f"must be at least {minimum} for {known}")
    multiple = WHOLE_UNITS_ONLY.get(known)
    if multiple is not None and value % multiple:
        raise ValidationError(
            "amount",
            f"must be a multiple of {multiple} for {known}: Stripe charges whole units only "
            f"({multiple} is 1 {known.upper()})",
        )
    return value


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError("metadata", "must be an object of string keys and string values")
    if len(value) > MAX_METADATA_KEYS:
        raise ValidationError("metadata", f"may have at most {MAX_METADATA_KEYS} keys")
    cleaned: dict[str, str] = {}
    for key, item in value.items():
        field = f"metadata.{key}" if isinstance(key, str) else "metadata"
        if not key or len(key) > MAX_METADATA_KEY_LENGTH or "[" in key or "]" in key:
            raise ValidationError(
                field, f"keys must be 1 to {MAX_METADATA_KEY_LENGTH} characters without brackets"
            )
        if key == CALLER_METADATA_KEY:
            raise ValidationError(field, "is set by this service: it says who made the payment")
        # Stripe stores metadata as strings; numbers are accepted and stored as their text.
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ValidationError(field, "must be a string")
        text = str(item)
        if "\x00" in key or "\x00" in text:
            raise ValidationError(field, "must not contain NUL characters")
        # Limits before work: a huge value is refused before anything scans it.
        if len(text) > MAX_METADATA_VALUE_LENGTH:
            raise ValidationError(field, f"must be at most {MAX_METADATA_VALUE_LENGTH} characters")
        # Metadata is stored and shown in plain text: card data must never reach it.
        if contains_card_number(key) or contains_card_number(text):
            raise ValidationError(field, "must not contain a card number")
        cleaned[key] = text
    return cleaned


def validate_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    return _key(value)


def validate_required_idempotency_key(value: str | None) -> str:
    """The operators' calls move money: each must carry its key, so a retry is always safe."""
    if value is None:
        raise ValidationError("Idempotency-Key", "is required")
    return _key(value)


def _key(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValidationError("Idempotency-Key", "must not be empty")
    if len(value) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValidationError(
            "Idempotency-Key", f"must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        )
    if not value.isprintable() or not value.isascii():
        raise ValidationError("Idempotency-Key", "must be printable ASCII")
    return value


@dataclass(frozen=True)
class RefundRequest:
    amount: int | None = None  # None: whatever is left to refund
    reason: str | None = None


@dataclass(frozen=True)
class CaptureRequest:
    amount: int | None = None  # None: all that is capturable


@dataclass(frozen=True)
class CancelRequest:
    reason: str | None = None


def validate_refund_request(body: Any) -> RefundRequest:
    fields = _operation_body(body, {"amount", "reason"})
    return RefundRequest(
        amount=_optional_amount(fields.get("amount")),
        reason=_choice(fields, "reason", REFUND_REASONS),
    )


def validate_capture_request(body: Any) -> CaptureRequest:
    fields = _operation_body(body, {"amount"})
    return CaptureRequest(amount=_optional_amount(fields.get("amount")))


def validate_cancel_request(body: Any) -> CancelRequest:
    fields = _operation_body(body, {"reason"})
    return CancelRequest(reason=_choice(fields, "reason", CANCELLATION_REASONS))


def _operation_body(body: Any, allowed: set[str]) -> dict[str, Any]:
    """An operation's body: none at all is an empty one; unknown fields are refused."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(unknown[0] or '""', "is not a known field")
    return body


def _optional_amount(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("amount", "must be an integer in the currency's minor unit (cents)")
    if not 0 < value <= MAX_AMOUNT:
        raise ValidationError("amount", f"must be between 1 and {MAX_AMOUNT}")
    return value
