"""Checkout sessions, which the merchant's back end creates and prices, and the page that pays one.

``POST /api/checkout-sessions`` (an API client key) stores the order and answers its id, token
and page URL; ``/checkout/<id>`` is that page; ``POST /api/checkout-sessions/<id>/expire`` ends
it. ``/`` is the demo page, where the browser chooses the amount: only with ``CHECKOUT_DEMO``,
which only the stand-in accepts. The logic is ``shared.payments.checkout_sessions``.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

import stripe
from flask import Blueprint, Response, jsonify, render_template, request

from api.bodies import MAX_API_BODY_BYTES, InvalidJson, read_json_body
from api.context import ApiContext, Limits
from api.errors import error_response, stripe_error_response
from shared.config import Settings
from shared.currencies import major_units
from shared.observability.logs import bind
from shared.payments.callers import (
    SESSION_HEADER,
    Caller,
    CallerRejected,
    identify_caller,
)
from shared.payments.card_testing import cancel_session_payment
from shared.payments.checkout_sessions import (
    CheckoutSessionGone,
    CheckoutSessionNotFound,
    IssuedSession,
    OpenSession,
)
from shared.payments.operations import PaymentOperations
from shared.validation import (
    MAX_CHECKOUT_SESSION_SECONDS,
    CheckoutOrder,
    ValidationError,
    validate_checkout_session_request,
)

log = logging.getLogger(__name__)

Answer = tuple[Response, int]
DEMO_CREATOR = "demo"


def current_caller(settings: Settings) -> Caller | None:
    """The caller this request proves it is (raises CallerRejected for a false credential)."""
    return identify_caller(
        request.headers.get("Authorization"),
        request.headers.get(SESSION_HEADER),
        api_clients=settings.api_clients,
        encryption_keys=settings.encryption_keys,
        now=int(time.time()),
        session_max_age_seconds=MAX_CHECKOUT_SESSION_SECONDS,
    )


def checkout_blueprint(api: ApiContext, limits: Limits) -> Blueprint:
    checkout = Blueprint("checkout", __name__)
    settings = api.settings
    operations = PaymentOperations(api.runtime.sessions, api.runtime.gateway)

    @checkout.get("/")
    def demo_page() -> Answer:
        if not settings.checkout_demo:
            return error_response(
                404,
                "not_found",
                "Checkout pages are at /checkout/<id>: a shop's back end creates them with "
                "POST /api/checkout-sessions.",
            )
        return _page(settings, session=None), 200

    @checkout.get("/checkout/<session_id>")
    @limits.status
    def session_page(session_id: str) -> Answer:
        try:
            session = api.checkout_sessions.open_session(session_id)
        except CheckoutSessionNotFound:
            return _page(settings, session=None, ended="This checkout does not exist."), 404
        except CheckoutSessionGone as exc:
            return _page(settings, session=None, ended=exc.message), 410
        return _page(settings, session=session), 200

    @checkout.post("/api/checkout-sessions")
    @limits.create
    def new_session() -> Answer:
        creator = _session_creator(settings)
        if isinstance(creator, tuple):
            return creator
        try:
            order = validate_checkout_session_request(read_json_body(MAX_API_BODY_BYTES))
        except InvalidJson:
            return error_response(400, "invalid_json", "The body is not valid JSON.")
        except ValidationError as exc:
            return error_response(400, "invalid_request", exc.message, field=exc.field)
        issued = api.checkout_sessions.create(order, created_by=creator)
        bind(checkout_session=issued.id)
        log.info("checkout session %s created by %s", issued.id, creator)
        return _issued_view(issued, order), 201

    @checkout.post("/api/checkout-sessions/<session_id>/expire")
    @limits.create
    def expire_session(session_id: str) -> Answer:
        creator = _session_creator(settings, demo_allowed=False)
        if isinstance(creator, tuple):
            return creator
        return _expire(api, operations, session_id, creator)

    return checkout


def _issued_view(issued: IssuedSession, order: CheckoutOrder) -> Response:
    return jsonify(
        {
            "id": issued.id,
            "token": issued.token,
            "url": issued.url,
            "expiresAt": issued.expires_at.isoformat(),
            "amount": order.payment.amount,
            "currency": order.payment.currency,
        }
    )


def _expire(
    api: ApiContext, operations: PaymentOperations, session_id: str, creator: str
) -> Answer:
    bind(checkout_session=session_id)
    try:
        payment_intent_id = api.checkout_sessions.expire(session_id, creator, "expired")
    except CheckoutSessionNotFound:
        return error_response(404, "not_found", "No checkout session with that id.")
    if payment_intent_id is not None:
        try:
            cancel_session_payment(operations, session_id, payment_intent_id)
        except stripe.StripeError as exc:
            return stripe_error_response(exc)
    log.info("checkout session %s expired by %s", session_id, creator)
    return jsonify({"id": session_id, "status": "expired"}), 200


def _session_creator(settings: Settings, *, demo_allowed: bool = True) -> str | Answer:
    """Who may create (or end) a checkout session: an API client; anonymously, only the demo."""
    try:
        caller = current_caller(settings)
    except CallerRejected as exc:
        return error_response(401, "invalid_caller", str(exc))
    if caller is not None and caller.checkout_session_id is None:
        return caller.scope
    if caller is None and demo_allowed and settings.checkout_demo:
        return DEMO_CREATOR
    return error_response(
        401,
        "api_client_required",
        "Checkout sessions are created by the shop's back end: send its API client key "
        "(Authorization: Bearer ...).",
    )


def _page(settings: Settings, *, session: OpenSession | None, ended: str | None = None) -> Response:
    values: dict[str, Any] = {
        "stripe_js_url": settings.stripe_js_url,
        "publishable_key": settings.stripe_publishable_key,
        "status_timeout_ms": settings.checkout_status_timeout_seconds * 1000,
        "session": session,
        "ended": ended,
    }
    if session is not None:
        values["amount_text"] = major_units(session.amount, session.currency)
    page = Response(render_template("checkout.html", **values))
    page.headers["Content-Security-Policy"] = _page_policy(settings)
    # The page is the session's, and shows its order: no cache may keep it.
    page.headers["Cache-Control"] = "no-store"
    # The token is in the URL's fragment; no link on the page may carry the URL elsewhere.
    page.headers["Referrer-Policy"] = "no-referrer"
    return page


# The hosts Stripe's security guide lists for Stripe.js: its scripts (js.stripe.com and its
# subdomains), its frames (card fields, 3-D Secure at hooks.stripe.com) and its API.
STRIPE_SCRIPT_HOSTS = "https://js.stripe.com https://*.js.stripe.com"
STRIPE_FRAME_HOSTS = "https://js.stripe.com https://*.js.stripe.com https://hooks.stripe.com"


def _page_policy(settings: Settings) -> str:
    # Stripe.js needs its own scripts, frames (card fields, 3-D Secure) and API calls; the
    # origin STRIPE_JS_URL names too (the stand-in's double in dev).
    parts = urlsplit(settings.stripe_js_url)
    stripe_origin = f"{parts.scheme}://{parts.netloc}"
    return (
        f"default-src 'self'; script-src 'self' {stripe_origin} {STRIPE_SCRIPT_HOSTS}; "
        f"frame-src {stripe_origin} {STRIPE_FRAME_HOSTS} https://*.stripe.com; "
        f"connect-src 'self' {stripe_origin} https://api.stripe.com "
        f"{settings.stripe_api_base or ''}; "
        "img-src 'self' data: https://*.stripe.com; style-src 'self'; "
        # No <base> re-aiming relative URLs (the API calls), no form posting elsewhere.
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
