"""The operators' payments under /admin/payments/: read one, refund, capture, cancel.

Behind the operator tokens like the rest of /admin/ (read for GET, refund for the three calls
that move money; each audited), on the same rate-limit budget, and each call with a required
Idempotency-Key: a retry with the same key
gets Stripe's first answer again, never a second refund or capture. Each answers the payment
as GET /api/payments/<id> shows it. The logic is ``shared.payments.operations``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial, update_wrapper
from typing import Any

import stripe
from flask import Blueprint, g, jsonify, request

from api.admin import guard_operators
from api.bodies import MAX_API_BODY_BYTES, read_capped_body
from api.context import ApiContext, Limits
from api.errors import error_response, log_stripe_error, stripe_error_response
from api.payments import payment_view
from shared.observability.logs import bind
from shared.payments.details import find_payment_details
from shared.payments.operations import OperationResult, PaymentNotFound, PaymentOperations
from shared.validation import (
    ValidationError,
    validate_cancel_request,
    validate_capture_request,
    validate_refund_request,
    validate_required_idempotency_key,
)

log = logging.getLogger(__name__)

Answer = tuple[Any, int]
# An operation: (PaymentIntent id, the validated request, the operator's key) -> its result.
Operate = Callable[[str, Any, str], OperationResult]


def admin_payments_blueprint(api: ApiContext, limits: Limits) -> Blueprint:
    blueprint = Blueprint("admin_payments", __name__, url_prefix="/admin/payments")
    limits.admin(blueprint)
    operations = PaymentOperations(api.runtime.sessions, api.runtime.gateway)
    blueprint.add_url_rule(
        "/<payment_intent_id>",
        endpoint="payment",
        # A name of its own: the rate limiter tells views apart by it (a bare partial has none,
        # and the limiter then skipped the route, logging an error).
        view_func=update_wrapper(partial(_payment, api), _payment),
        methods=["GET"],
    )
    scopes = {"admin_payments.payment": "read"}
    routes: dict[str, tuple[Callable[[Any], Any], Operate]] = {
        "refunds": (validate_refund_request, operations.refund),
        "capture": (validate_capture_request, operations.capture),
        "cancel": (validate_cancel_request, operations.cancel),
    }
    for name, (validate, operate) in routes.items():
        blueprint.add_url_rule(
            f"/<payment_intent_id>/{name}",
            endpoint=name,
            view_func=_view(name, validate, operate),
            methods=["POST"],
        )
        scopes[f"admin_payments.{name}"] = "refund"
    guard_operators(blueprint, api, scopes)
    return blueprint


def _payment(api: ApiContext, payment_intent_id: str) -> Answer:
    """Any payment, as GET /api/payments/<id> shows it, without its client secret."""
    bind(payment_intent_id=payment_intent_id)
    details = find_payment_details(api.runtime.sessions, payment_intent_id)
    if details is None:
        return error_response(404, "not_found", "No payment with that PaymentIntent id.")
    return jsonify(payment_view(details)), 200


def _view(name: str, validate: Callable[[Any], Any], operate: Operate) -> Callable[[str], Answer]:
    def view(payment_intent_id: str) -> Answer:
        return _operate(name, validate, operate, payment_intent_id)

    # The rate limiter tells views apart by their qualified names.
    view.__name__ = view.__qualname__ = f"admin_payments_{name}"
    return view


def _operate(
    name: str, validate: Callable[[Any], Any], operate: Operate, payment_intent_id: str
) -> Answer:
    bind(payment_intent_id=payment_intent_id)
    try:
        key = validate_required_idempotency_key(request.headers.get("Idempotency-Key"))
        operation = validate(_body())
    except ValidationError as exc:
        return error_response(400, "invalid_request", exc.message, field=exc.field)
    try:
        result = operate(payment_intent_id, operation, key)
    except PaymentNotFound:
        return error_response(404, "not_found", "No payment with that PaymentIntent id.")
    except stripe.StripeError as exc:
        g.stripe_request_id = exc.request_id
        return _stripe_refused(exc)
    g.stripe_request_id = result.stripe_request_id
    log.info(
        "admin %s on %s: Stripe answered %s %s",
        name,
        payment_intent_id,
        result.stripe_object.get("id"),
        result.stripe_object.get("status"),
    )
    return jsonify(payment_view(result.details)), 200


def _body() -> Any:
    """The JSON body; none at all is an empty request (every field is optional)."""
    raw = read_capped_body(MAX_API_BODY_BYTES)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError("body", "is not valid JSON") from None


def _stripe_refused(exc: stripe.StripeError) -> Answer:
    answer = _our_answer_to(exc)
    if answer is None:
        return stripe_error_response(exc)
    log_stripe_error(exc)  # as stripe_error_response does for the others
    return answer


def _our_answer_to(exc: stripe.StripeError) -> Answer | None:
    """The operator API's own answer to a reused key or an unknown PaymentIntent; None for the
    rest, which are answered as everywhere else."""
    if isinstance(exc, stripe.IdempotencyError):
        # The key was used for this operation on this payment with other parameters (or that
        # request is still running): as create-payment answers a reused key.
        if exc.code == "idempotency_key_in_use":
            message = "A request with this Idempotency-Key is still in progress; retry shortly."
            return error_response(409, exc.code, message, field="Idempotency-Key")
        message = "This Idempotency-Key was already used for this operation with other values."
        return error_response(409, "idempotency_key_reused", message, field="Idempotency-Key")
    if isinstance(exc, stripe.InvalidRequestError) and exc.http_status == 404:
        return error_response(404, "not_found", "Stripe has no such PaymentIntent.")
    return None
