"""What Stripe's test mode does after a payment with some test cards has succeeded
(https://docs.stripe.com/testing#disputes; the table is ``devtools/cards.py``):

- ``4000000000000259`` (fraudulent), ``4000000000002685`` (product not received): a moment
  later the payment is disputed: ``charge.dispute.created``, ``charge.dispute.funds_withdrawn``;
- ``4000000000001976``: an inquiry, ``charge.dispute.created`` (``warning_needs_response``);
- ``4000000000005423``: an early fraud warning, ``radar.early_fraud_warning.created``
  (``GET /v1/radar/early_fraud_warnings/{id}`` reads it).

The follow-up comes ``FOLLOW_UP_DELAY`` seconds after the payment succeeded (at capture, for a
manual-capture payment), outside any API call (its events have a null ``request``), so its
events are always created a second or more after the payment's own.

Differences left: only payments through PaymentIntents are followed up (not ``POST
/v1/charges``); Stripe's other dispute cards (multiple disputes, Visa compelling evidence 3.0)
behave like 4242424242424242.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from localstripe.resources import PaymentIntent, PaymentMethod, StripeObject
from localstripe.server import json_response

from devtools import cards, stripe_disputes, stripe_events
from devtools.stripe_shape import emit, later

FOLLOW_UP_DELAY = 1.0

_original: dict[str, Any] = {}


class EarlyFraudWarning(StripeObject):
    object = "radar.early_fraud_warning"
    _id_prefix = "issfr_"

    def __init__(self, charge: Any) -> None:
        super().__init__()
        fixture = stripe_events.resource("radar.early_fraud_warning")
        self.actionable = fixture["actionable"]
        self.fraud_type = fixture["fraud_type"]
        self.charge = charge.id
        self.payment_intent = charge.payment_intent


def warn_of_fraud(charge: Any) -> EarlyFraudWarning:
    warning = EarlyFraudWarning(charge)
    emit("radar.early_fraud_warning.created", warning)
    return warning


def _card_of(intent: Any) -> cards.TestCard | None:
    if not intent.payment_method:
        return None
    method = PaymentMethod._api_retrieve(intent.payment_method)
    return cards.card(getattr(method, "_card_number", None))


def _on_success(self: Any) -> None:
    _original["on_success"](self)
    card, charge = _card_of(self), self.latest_charge
    if card is None or charge is None:
        return
    if (plan := card.dispute) is not None:
        later(FOLLOW_UP_DELAY, lambda: stripe_disputes.open_dispute(charge, plan))
    if card.early_fraud_warning:
        later(FOLLOW_UP_DELAY, lambda: warn_of_fraud(charge))


async def _retrieve_warning(request: web.Request) -> web.Response:
    return json_response(EarlyFraudWarning._api_retrieve(request.match_info["id"])._export())


def install(app: web.Application) -> None:
    if not _original:
        _original["on_success"] = PaymentIntent._on_success
        PaymentIntent._on_success = _on_success
    app.router.add_get("/v1/radar/early_fraud_warnings/{id}", _retrieve_warning)
