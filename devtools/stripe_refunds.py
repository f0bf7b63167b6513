"""Refunds at the stand-in as at Stripe: the limits, the errors and the events.

localstripe refunds any amount any number of times (a refund of "the rest" is always the whole
charge), takes no ``reason``, sends no event, and releases the uncaptured part of a partial
capture as a Refund object. Stripe, for a card payment:

- ``POST /v1/refunds`` (``payment_intent`` or ``charge``, ``amount``, ``reason``) refunds at
  most what is left (``charge.amount - charge.amount_refunded``), the rest by default; more is a
  400 ``amount_too_large`` ("Refund amount ($25.00) is greater than unrefunded amount on charge
  ($21.45)"), and a charge with nothing left a 400 ``charge_already_refunded``;
- the Refund is ``succeeded`` at once, and two events follow, in this order: ``charge.refunded``
  (the Charge, its new ``amount_refunded`` and ``refunded``, with ``previous_attributes``) and
  ``refund.created``;
- a partial capture releases the rest without a Refund object: the charge's ``amount_refunded``
  counts it, and no refund event is sent for it.

Differences left: a card refund never fails or stays pending (no ``refund.updated`` or
``refund.failed``); a PaymentIntent that is not captured is refused (Stripe would release the
authorization; cancel it instead); amounts in the error message carry a symbol for usd, eur,
gbp and jpy only (others read "25.00 CHF").
"""

from __future__ import annotations

from typing import Any

from localstripe.resources import Charge, PaymentIntent, Refund, try_convert_to_int

from devtools import stripe_events
from devtools.stripe_shape import emit, stripe_error

REASONS = ("duplicate", "fraudulent", "requested_by_customer")
# https://docs.stripe.com/currencies#zero-decimal
ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"}
    | {"pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥"}

_original: dict[str, Any] = {}


def money(amount: int, currency: str) -> str:
    """An amount as Stripe's messages write it: $1,000.00, ¥500, 25.00 CHF."""
    zero_decimal = currency in ZERO_DECIMAL
    value = f"{amount:,}" if zero_decimal else f"{amount // 100:,}.{amount % 100:02d}"
    symbol = SYMBOLS.get(currency)
    return f"{symbol}{value}" if symbol else f"{value} {currency.upper()}"


def _charge_of(payment_intent: Any, charge: Any) -> Any:
    if (payment_intent is None) == (charge is None):
        raise stripe_error(
            400,
            "parameter_missing",
            "You must pass exactly one of charge or payment_intent.",
            param="payment_intent" if payment_intent is None else "charge",
        )
    if charge is not None:
        return Charge._api_retrieve(str(charge))
    intent = PaymentIntent._api_retrieve(str(payment_intent))
    latest = intent.latest_charge
    if latest is None or latest.status != "succeeded":
        raise stripe_error(
            400,
            "payment_intent_unexpected_state",
            f"This PaymentIntent ({intent.id}) does not have a successful charge to refund.",
            param="payment_intent",
        )
    return latest


def _checked_amount(charge: Any, amount: Any) -> int:
    if not charge.captured:
        raise stripe_error(
            400,
            "payment_intent_unexpected_state",
            f"Charge {charge.id} has not been captured: cancel its PaymentIntent to release it.",
        )
    if getattr(charge, "_charged_back", False):
        message = f"Charge {charge.id} has been charged back; cannot issue a refund."
        raise stripe_error(400, "charge_disputed", message)
    left = int(charge.amount) - int(charge.amount_refunded)
    if left <= 0:
        raise stripe_error(
            400, "charge_already_refunded", f"Charge {charge.id} has already been refunded."
        )
    if amount is None:
        return left
    value = try_convert_to_int(amount)
    if not isinstance(value, int) or value < 1:
        raise stripe_error(400, "parameter_invalid_integer", "Invalid positive integer", "amount")
    if value > left:
        raise stripe_error(
            400,
            "amount_too_large",
            f"Refund amount ({money(value, charge.currency)}) is greater than unrefunded amount "
            f"on charge ({money(left, charge.currency)})",
            param="amount",
        )
    return value


def _create(
    cls: Any,
    payment_intent: Any = None,
    charge: Any = None,
    amount: Any = None,
    reason: Any = None,
    **data: Any,
) -> Any:
    if reason is not None and reason not in REASONS:
        raise stripe_error(
            400,
            "parameter_invalid_string",
            "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
            param="reason",
        )
    charge_obj = _charge_of(payment_intent, charge)
    value = _checked_amount(charge_obj, amount)
    before = {"amount_refunded": charge_obj.amount_refunded, "refunded": charge_obj.refunded}
    refund = Refund(charge=charge_obj.id, amount=value, **data)
    refund.reason = reason
    refund.payment_intent = charge_obj.payment_intent
    for name, value in stripe_events.resource("refund").items():
        if not hasattr(refund, name):
            setattr(refund, name, value)
    changed = {name: old for name, old in before.items() if getattr(charge_obj, name) != old}
    emit("charge.refunded", charge_obj, changed)
    emit("refund.created", refund)
    return refund


def _amount_refunded(self: Any) -> int:
    """Refunds, and what a partial capture or a cancellation released."""
    refunded = sum(refund.amount for refund in self.refunds._list)
    return int(refunded) + int(getattr(self, "_released", 0))


def _amount_captured(self: Any) -> int:
    if not self.captured or self.status != "succeeded":
        return 0
    captured = getattr(self, "_captured_amount", None)
    return int(self.amount if captured is None else captured)


def install() -> None:
    if _original:
        return
    _original["create"] = Refund._api_create
    Refund._api_create = classmethod(_create)
    Refund.reason = None
    Charge.amount_refunded = property(_amount_refunded)
    Charge.amount_captured = property(_amount_captured)
