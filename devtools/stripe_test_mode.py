"""Teach the stand-in what Stripe's test mode does at ``confirm`` with its test cards.

localstripe 1.15.10 declines most decline cards only when they are attached to a customer, so
paying with them succeeds; it words every decline as a generic one; it sends no
``payment_intent.created`` or ``requires_action`` events, nor ``payment_failed`` after a failed
3-D Secure; it refuses ``confirm`` with a ``payment_method``; and a PaymentIntent whose charge
failed can never be confirmed again. Real Stripe does all of these (the product relies on them),
so the stand-in must too. The card table is ``devtools/cards.py``.

Differences left: the error bodies carry Stripe's fields that matter here (type, code,
decline_code, message, charge, payment_intent, payment_method, doc_url) but not all of them;
charges have no ``outcome``; ``payment_method_data`` at confirm is not supported; events are
still in localstripe's old API version's shape.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from localstripe.errors import UserError
from localstripe.resources import Charge, Event, Invoice, PaymentIntent, PaymentMethod
from localstripe.server import get_post_data, json_response
from localstripe.webhooks import schedule_webhook

from devtools.cards import GENERIC_DECLINE, Decline, decline_for

AUTHENTICATION_FAILURE = {
    "type": "invalid_request_error",
    "code": "payment_intent_authentication_failure",
    "message": (
        "The provided PaymentMethod has failed authentication. You can provide "
        "payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent "
        "again."
    ),
    "doc_url": "https://docs.stripe.com/error-codes/payment-intent-authentication-failure",
}
# Statuses Stripe lets a PaymentIntent be confirmed from (with a payment method given).
CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
# Parameters Stripe.js sends with a confirm that change nothing at the stand-in.
IGNORED_CONFIRM_PARAMS = ("client_secret", "return_url", "use_stripe_sdk")

_CONFIRM = re.compile(r"^/v1/payment_intents/(pi_\w+)/confirm$")
_AUTHENTICATE = re.compile(r"^/v1/payment_intents/(pi_\w+)/_authenticate$")

_original: dict[str, Any] = {}


def _card_number(payment_method_id: str | None) -> str | None:
    if not payment_method_id:
        return None
    method = PaymentMethod._api_retrieve(payment_method_id)
    return getattr(method, "_card_number", None)


def _charging_is_declined(self: Any) -> bool:
    card = isinstance(self, PaymentMethod) and self.type == "card"
    if card and decline_for(self._card_number) is not None:
        return True
    # Other cards keep localstripe's rule (3-D Secure cards that then decline, SEPA).
    return bool(_original["charging_is_declined"](self))


def _set_auth_failure(self: Any) -> None:
    decline = decline_for(_card_number(self.payment_method)) or GENERIC_DECLINE
    self.status = "failed"
    self.failure_code = decline.code
    self.failure_message = decline.message
    self._decline = decline


def _doc_url(code: str) -> str:
    return "https://docs.stripe.com/error-codes/" + code.replace("_", "-")


def _card_error(charge: Any, payment_method_id: str) -> dict[str, Any]:
    decline: Decline = getattr(charge, "_decline", GENERIC_DECLINE)
    return {
        "type": "card_error",
        "code": decline.code,
        "decline_code": decline.decline_code,
        "message": decline.message,
        "charge": charge.id,
        "doc_url": _doc_url(decline.code),
        "payment_method": PaymentMethod._api_retrieve(payment_method_id)._export(),
    }


def _fail_attempt(intent: Any, error: dict[str, Any]) -> None:
    """Stripe after a failed attempt: the PaymentIntent is back to requires_payment_method with
    the error, its payment method detached from it (kept in the error), and payment_failed sent."""
    intent._last_error = error
    intent._awaiting_confirmation = False
    intent.payment_method = None
    schedule_webhook(Event("payment_intent.payment_failed", intent))


def _report_failure(self: Any) -> None:
    _fail_attempt(self, _card_error(self.latest_charge, self.payment_method))
    if self.invoice:
        Invoice._api_retrieve(self.invoice)._on_payment_failure_now()
    raise _card_error_response(self)


def _card_error_response(intent: Any) -> UserError:
    error = UserError(402, None, {**intent._last_error, "payment_intent": intent._export()})
    error.body["error"]["type"] = "card_error"  # UserError always says invalid_request_error
    return error


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    _original["init"](self, *args, **kwargs)
    self._last_error = None
    self._awaiting_confirmation = False
    schedule_webhook(Event("payment_intent.created", self))


def _confirm(self: Any, on_failure_now: Any) -> None:
    # A new attempt: Stripe clears the previous attempt's error.
    self._last_error = None
    _original["confirm"](self, on_failure_now)
    if self.next_action:
        schedule_webhook(Event("payment_intent.requires_action", self))


def _update(self: Any, **data: Any) -> None:
    _original["update"](self, **data)
    # Stripe: last_payment_error "will be cleared if the PaymentIntent is later updated".
    self._last_error = None
    if data.get("payment_method"):
        self._awaiting_confirmation = True


def _status(self: Any) -> str | None:
    charge = self.latest_charge
    failed_before = charge is not None and charge.status == "failed"
    if (
        failed_before
        and self._awaiting_confirmation
        and self.payment_method
        and not self._canceled
        and not self.next_action
    ):
        # A new card after a failed attempt: confirmable again, as at Stripe.
        return "requires_confirmation"
    status: str | None = _original["status"].fget(self)
    return status


def _last_payment_error(self: Any) -> dict[str, Any] | None:
    if self._last_error is not None:
        return dict(self._last_error)
    if self._awaiting_confirmation:
        return None
    error: dict[str, Any] | None = _original["last_payment_error"].fget(self)
    return error


def _patch_classes() -> None:
    if _original:
        return
    _original.update(
        charging_is_declined=PaymentMethod._charging_is_declined,
        init=PaymentIntent.__init__,
        confirm=PaymentIntent._confirm,
        update=PaymentIntent._update,
        status=PaymentIntent.__dict__["status"],
        last_payment_error=PaymentIntent.__dict__["last_payment_error"],
    )
    PaymentMethod._charging_is_declined = _charging_is_declined
    Charge._set_auth_failure = _set_auth_failure
    PaymentIntent.__init__ = _init
    PaymentIntent._confirm = _confirm
    PaymentIntent._update = _update
    PaymentIntent._report_failure = _report_failure
    PaymentIntent.status = property(_status)
    PaymentIntent.last_payment_error = property(_last_payment_error)


async def _confirm_route(request: web.Request, intent_id: str) -> web.Response:
    """POST /v1/payment_intents/{id}/confirm as Stripe takes it: with an optional
    ``payment_method`` (localstripe's own answers 500 "Not implemented" to one)."""
    data = await get_post_data(request) or {}
    expand = data.pop("expand", None)
    payment_method = data.pop("payment_method", None)
    for name in IGNORED_CONFIRM_PARAMS:
        data.pop(name, None)
    if data:
        raise UserError(400, "Received unknown parameters: " + ", ".join(data))
    intent = PaymentIntent._api_retrieve(intent_id)
    if payment_method is not None:
        _use_payment_method(intent, payment_method)
    intent = PaymentIntent._api_confirm(id=intent_id)
    return json_response(intent._export(expand=expand))


def _use_payment_method(intent: Any, payment_method: Any) -> None:
    if intent.status not in CONFIRMABLE:
        raise UserError(
            400,
            f"You cannot confirm this PaymentIntent because it has a status of {intent.status}.",
            {"code": "payment_intent_unexpected_state"},
        )
    if not isinstance(payment_method, str):
        raise UserError(400, "Invalid payment_method", {"param": "payment_method"})
    PaymentMethod._api_retrieve(payment_method)  # a 404 for one that does not exist
    intent.next_action = None
    intent._update(payment_method=payment_method)


async def _authenticate_route(request: web.Request, intent_id: str) -> web.Response:
    """The stand-in's 3-D Secure step, plus what Stripe does when authentication fails: the
    PaymentIntent goes back to requires_payment_method and payment_failed is sent."""
    data = await get_post_data(request) or {}
    expand = data.pop("expand", None)
    intent = PaymentIntent._api_authenticate(id=intent_id, **data)
    if intent._authentication_failed:
        _fail_attempt(intent, dict(AUTHENTICATION_FAILURE))
    return json_response(intent._export(expand=expand))


@web.middleware
async def _routes(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.method == "POST":
        if match := _CONFIRM.match(request.path):
            return await _confirm_route(request, match[1])
        if match := _AUTHENTICATE.match(request.path):
            return await _authenticate_route(request, match[1])
    response: web.StreamResponse = await handler(request)
    return response


def install(app: web.Application) -> None:
    _patch_classes()
    # Last, so localstripe's own middlewares (errors to JSON, authentication) run around it;
    # its routes captured the original confirm and authenticate, so these take them over here.
    app.middlewares.append(_routes)
