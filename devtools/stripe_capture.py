"""Manual capture and cancellation at the stand-in as at Stripe.

localstripe authorizes a ``capture_method=manual`` PaymentIntent silently, captures the whole
charge whatever amount is asked and releases the rest as a Refund, refuses
``cancellation_reason`` and cancels without an event. Stripe:

- a manual-capture PaymentIntent confirmed with a card that is authorized goes to
  ``requires_capture`` with ``amount_capturable`` = its amount and sends
  ``payment_intent.amount_capturable_updated`` (not ``succeeded``);
- ``POST /v1/payment_intents/{id}/capture`` (``amount_to_capture`` up to ``amount_capturable``,
  all of it by default) sends ``charge.captured`` (the Charge: ``captured``, ``amount_captured``,
  and ``amount_refunded`` = the released rest) then ``payment_intent.succeeded`` with
  ``amount_received`` = the amount captured; a PaymentIntent in another status is a 400
  ``payment_intent_unexpected_state``;
- ``POST /v1/payment_intents/{id}/cancel`` (``cancellation_reason`` optional) sends
  ``payment_intent.canceled`` with ``cancellation_reason`` and ``canceled_at``; an authorized
  charge is released (``amount_refunded`` = its amount); a succeeded or canceled PaymentIntent
  is a 400 ``payment_intent_unexpected_state``.

Differences left: no ``charge.succeeded``/``charge.updated`` events; capturing more than
``amount_capturable`` is refused with code ``amount_too_large`` in our own words; an
authorization never expires; capture takes no other parameter than ``amount_to_capture``.
"""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web
from localstripe.resources import BalanceTransaction, Charge, PaymentIntent, try_convert_to_int
from localstripe.server import get_post_data, json_response

from devtools.stripe_shape import emit, stripe_error

CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
)
CANCELLATION_REASONS = ("abandoned", "duplicate", "fraudulent", "requested_by_customer")

_CAPTURE = re.compile(r"^/v1/payment_intents/(pi_\w+)/capture$")
_CANCEL = re.compile(r"^/v1/payment_intents/(pi_\w+)/cancel$")

_original: dict[str, Any] = {}


def _unexpected_state(intent: Any, message: str) -> Exception:
    return stripe_error(
        400, "payment_intent_unexpected_state", message, payment_intent=intent._export()
    )


def _capture_charge(self: Any, amount: Any, on_success: Any = None) -> None:
    """Charge._capture as Stripe does it: only ``amount`` is taken, the rest is released."""
    value = self.amount if amount is None else try_convert_to_int(amount)
    if self.captured or self.status != "succeeded":
        raise stripe_error(
            400, "charge_already_captured", f"Charge {self.id} has already been captured."
        )
    if not isinstance(value, int) or not 0 < value <= self.amount:
        raise stripe_error(400, "amount_too_large", "Invalid amount to capture", param="amount")
    previous = {"amount_captured": 0, "balance_transaction": None, "captured": False}
    if value < self.amount:
        previous["amount_refunded"] = self.amount_refunded
    self._captured_amount = value
    self._released = self.amount - value
    txn = BalanceTransaction(
        amount=value,
        currency=self.currency,
        description=self.description,
        exchange_rate=1.0,
        reporting_category="charge",
        source=self.id,
        type="charge",
    )
    self.balance_transaction = txn.id
    self.captured = True
    emit("charge.captured", self, previous)
    if on_success:
        on_success()


def _create_charge(self: Any, on_failure_now: Any) -> None:
    _original["create_charge"](self, on_failure_now)
    if self.status == "requires_capture":
        emit("payment_intent.amount_capturable_updated", self)


def _amount_received(self: Any) -> int:
    charge = self.latest_charge
    return 0 if charge is None else int(charge.amount_captured)


def _amount_capturable(self: Any) -> int:
    return int(self.amount) if self.status == "requires_capture" else 0


async def _params(request: web.Request, allowed: tuple[str, ...]) -> tuple[dict[str, Any], Any]:
    data = dict(await get_post_data(request) or {})
    expand = data.pop("expand", None)
    unknown = [name for name in data if name not in allowed]
    if unknown:
        raise stripe_error(
            400, "parameter_unknown", f"Received unknown parameter: {unknown[0]}", unknown[0]
        )
    return data, expand


async def _capture_route(request: web.Request, intent_id: str) -> web.Response:
    data, expand = await _params(request, ("amount_to_capture",))
    intent = PaymentIntent._api_retrieve(intent_id)
    if intent.status != "requires_capture":
        raise _unexpected_state(
            intent,
            "This PaymentIntent could not be captured because it has a status of "
            f"{intent.status}. Only a PaymentIntent with one of the following statuses may be "
            "captured: requires_capture.",
        )
    capturable = intent.amount_capturable
    amount = try_convert_to_int(data.get("amount_to_capture", capturable))
    if not isinstance(amount, int) or amount < 1:
        raise stripe_error(
            400, "parameter_invalid_integer", "Invalid positive integer", "amount_to_capture"
        )
    if amount > capturable:
        raise stripe_error(
            400,
            "amount_too_large",
            f"The amount_to_capture ({amount}) is greater than the amount_capturable "
            f"({capturable}) of this PaymentIntent.",
            param="amount_to_capture",
        )
    intent.latest_charge._capture(amount, on_success=intent._on_success)
    return json_response(intent._export(expand=expand))


async def _cancel_route(request: web.Request, intent_id: str) -> web.Response:
    data, expand = await _params(request, ("cancellation_reason",))
    reason = data.get("cancellation_reason")
    if reason is not None and reason not in CANCELLATION_REASONS:
        raise stripe_error(
            400,
            "parameter_invalid_string",
            "Invalid cancellation_reason: must be one of abandoned, duplicate, fraudulent, or "
            "requested_by_customer",
            param="cancellation_reason",
        )
    intent = PaymentIntent._api_retrieve(intent_id)
    if intent.status not in CANCELABLE:
        raise _unexpected_state(
            intent,
            "You cannot cancel this PaymentIntent because it has a status of "
            f"{intent.status}. Only a PaymentIntent with one of the following statuses may be "
            f"canceled: {', '.join(CANCELABLE)}.",
        )
    charge = intent.latest_charge
    if charge is not None and charge.status == "succeeded" and not charge.captured:
        charge._released = charge.amount  # the authorization is released
    intent._canceled = True
    intent.next_action = None
    intent.cancellation_reason = reason
    intent.canceled_at = int(time.time())
    emit("payment_intent.canceled", intent)
    return json_response(intent._export(expand=expand))


@web.middleware
async def _routes(request: web.Request, handler: Any) -> web.StreamResponse:
    # localstripe's own routes hold its functions: these paths are taken over here.
    if request.method == "POST":
        if match := _CAPTURE.match(request.path):
            return await _capture_route(request, match[1])
        if match := _CANCEL.match(request.path):
            return await _cancel_route(request, match[1])
    response: web.StreamResponse = await handler(request)
    return response


def install(app: web.Application) -> None:
    if not _original:
        _original["create_charge"] = PaymentIntent._create_charge
        PaymentIntent._create_charge = _create_charge
        Charge._capture = _capture_charge
        PaymentIntent.amount_received = property(_amount_received)
        PaymentIntent.amount_capturable = property(_amount_capturable)
        PaymentIntent.cancellation_reason = None
        PaymentIntent.canceled_at = None
    app.middlewares.append(_routes)
