"""The checkout page, and the checkout sessions that make a browser a caller of its own."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Response, jsonify, render_template, request

from api.context import ApiContext, Limits
from shared.config import Settings
from shared.payments.callers import (
    SESSION_COOKIE,
    SESSION_HEADER,
    SESSION_MAX_AGE_SECONDS,
    Caller,
    CallerRejected,
    identify_caller,
    new_session_token,
)


def current_caller(settings: Settings) -> Caller | None:
    """The caller this request proves it is (raises CallerRejected for a false credential)."""
    return identify_caller(
        request.headers.get("Authorization"),
        request.headers.get(SESSION_HEADER) or request.cookies.get(SESSION_COOKIE),
        api_clients=settings.api_clients,
        encryption_keys=settings.encryption_keys,
    )


def with_session_cookie(response: Response, token: str) -> Response:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_MAX_AGE_SECONDS,
        path="/",
        secure=request.is_secure,
        httponly=True,
        samesite="Strict",
    )
    return response


def checkout_blueprint(api: ApiContext, limits: Limits) -> Blueprint:
    checkout = Blueprint("checkout", __name__)
    settings = api.settings

    @checkout.get("/")
    def page() -> Response:
        page = Response(
            render_template(
                "checkout.html",
                stripe_js_url=settings.stripe_js_url,
                publishable_key=settings.stripe_publishable_key,
                status_timeout_ms=settings.checkout_status_timeout_seconds * 1000,
            )
        )
        page.headers["Content-Security-Policy"] = _page_policy(settings)
        # It sets the visitor's session cookie: no cache may hand it to the next visitor.
        page.headers["Cache-Control"] = "no-store"
        # The page's checkout session: the caller its payments and idempotency keys belong
        # to. A reload keeps the session, so a retried order replays rather than charging again.
        if not _has_valid_session(settings):
            with_session_cookie(page, new_session_token(settings.encryption_keys))
        return page

    @checkout.post("/api/checkout-sessions")
    @limits.create
    def new_session() -> tuple[Response, int]:
        token = new_session_token(settings.encryption_keys)
        response = jsonify({"checkoutSession": token, "header": SESSION_HEADER})
        return with_session_cookie(response, token), 201

    return checkout


def _has_valid_session(settings: Settings) -> bool:
    if request.cookies.get(SESSION_COOKIE) is None:
        return False
    try:
        return current_caller(settings) is not None
    except CallerRejected:
        return False


def _page_policy(settings: Settings) -> str:
    # Stripe.js needs its own scripts, frames (card fields, 3-D Secure) and API calls.
    parts = urlsplit(settings.stripe_js_url)
    stripe_origin = f"{parts.scheme}://{parts.netloc}"
    return (
        f"default-src 'self'; script-src 'self' {stripe_origin}; "
        f"frame-src {stripe_origin} https://*.stripe.com; "
        f"connect-src 'self' {stripe_origin} https://api.stripe.com "
        f"{settings.stripe_api_base or ''}; "
        "img-src 'self' data: https://*.stripe.com; style-src 'self'; "
        # No <base> re-aiming relative URLs (the API calls), no form posting elsewhere.
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
