"""The one error envelope of the API, and the handlers that map exceptions onto it.

Every error answer is ``{"success": false, "error": {"code", "message", ...}}``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import stripe
from flask import Flask, Response, current_app, jsonify, request
from flask_limiter import RateLimitExceeded
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from werkzeug.exceptions import HTTPException

from shared.observability.redaction import redact

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, **extra: Any) -> tuple[Response, int]:
    error: dict[str, Any] = {"code": code, "message": message, **extra}
    return jsonify({"success": False, "error": error}), status


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(OperationalError, _database_unavailable)
    app.register_error_handler(SQLAlchemyTimeoutError, _database_unavailable)
    app.register_error_handler(Exception, _unexpected_error)


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    code = (exc.name or "error").lower().replace(" ", "_")
    response, status = error_response(exc.code or 500, code, exc.description or exc.name)
    # Keep what the exception says in headers (Allow on a 405), with our JSON body.
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    if isinstance(exc, RateLimitExceeded):
        response.headers["Retry-After"] = str(_seconds_until_allowed(exc))
    return response, status


def _seconds_until_allowed(exc: RateLimitExceeded) -> int:
    """When the oldest hit in the refused window leaves it; never 0. Should the limiter's storage
    not say, the window's length, the longest a client can have to wait."""
    try:
        limiter = next(iter(current_app.extensions["limiter"]))
        reset_at = limiter.current_limit.window.reset_time
    except Exception:  # the safe upper bound instead
        log.warning("could not read the rate limit's window; advising its length", exc_info=True)
        return max(1, int(exc.limit.limit.get_expiry()))
    # Rounded up: a client that waits exactly this long is not refused again.
    return max(1, math.ceil(reset_at - time.time()))


def _database_unavailable(exc: Exception) -> tuple[Response, int]:
    log.error("database unavailable on %s %s: %s", request.method, request.path, exc)
    response, status = error_response(
        503, "database_unavailable", "The service is briefly unavailable; try again."
    )
    response.headers["Retry-After"] = "5"
    return response, status


def _unexpected_error(exc: Exception) -> tuple[Response, int]:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", "Something went wrong on our side.")


def log_stripe_error(exc: stripe.StripeError) -> None:
    """One line per Stripe error. Stripe's request id finds the call in Stripe's dashboard; the
    message is not logged (it can quote what we sent). A card refused is routine; a request
    Stripe finds invalid (a reused key, an unknown object) may be the caller's or ours, worth a
    look; the rest is Stripe or the network failing us."""
    level = logging.ERROR
    if isinstance(exc, stripe.CardError):
        level = logging.INFO
    elif isinstance(exc, stripe.InvalidRequestError | stripe.IdempotencyError):
        level = logging.WARNING
    log.log(
        level,
        "Stripe error %s %s (HTTP %s, request %s)",
        type(exc).__name__,
        exc.code or "-",
        exc.http_status,
        exc.request_id,
    )


def stripe_error_response(exc: stripe.StripeError) -> tuple[Response, int]:
    log_stripe_error(exc)
    # Stripe's own messages are shown for card and request errors (they are written for
    # customers); for the others we say what happened without passing Stripe's text on.
    if isinstance(exc, stripe.CardError):
        # user_message is written by Stripe for the customer; masked all the same.
        message = redact(exc.user_message or "The card was declined.")
        return error_response(402, exc.code or "card_error", message)
    if isinstance(exc, stripe.InvalidRequestError):
        # Stripe's raw message can quote the values we sent; name only the parameter.
        param = f" (parameter {exc.param})" if exc.param else ""
        return error_response(
            400, exc.code or "invalid_request", f"Stripe rejected the request{param}."
        )
    if isinstance(exc, stripe.APIConnectionError):
        return error_response(503, "stripe_unreachable", "Could not reach Stripe; try again.")
    if isinstance(exc, stripe.RateLimitError):
        return error_response(503, "stripe_rate_limited", "Stripe is busy; try again shortly.")
    return error_response(502, "stripe_error", "Stripe could not process the request.")
