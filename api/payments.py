"""Creating payments (per caller, per idempotency key) and reading them (with proof)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import stripe
from flask import Blueprint, Response, jsonify, request

from api.bodies import MAX_API_BODY_BYTES, InvalidJson, read_json_body
from api.checkout import current_caller
from api.context import ApiContext, Limits
from api.errors import error_response, stripe_error_response
from shared.models import Dispute, Refund
from shared.observability.logs import bind
from shared.observability.metrics import PAYMENT_ATTEMPTS
from shared.payments import IdempotencyConflict, IdempotencyKeyInUse, PaymentCreated
from shared.payments.callers import (
    SESSION_HEADER,
    Caller,
    CallerRejected,
    SessionTokenExpired,
    secret_matches,
)
from shared.payments.checkout_sessions import (
    SESSION_ID_PREFIX,
    CheckoutSessionGone,
    CheckoutSessionMismatch,
    CheckoutSessionNotFound,
)
from shared.payments.details import PaymentDetails, find_payment_details
from shared.validation import (
    CALLER_METADATA_KEY,
    PaymentRequest,
    ValidationError,
    validate_idempotency_key,
    validate_payment_request,
)

log = logging.getLogger(__name__)

Answer = tuple[Response, int]


def payments_blueprint(api: ApiContext, limits: Limits) -> Blueprint:
    payments = Blueprint("payments", __name__)

    @payments.post("/api/create-payment")
    @limits.create
    def create_payment() -> Answer:
        caller_or_error = _caller(api)
        if not isinstance(caller_or_error, Caller):
            return caller_or_error
        caller = caller_or_error
        asked = _payment_request(api, caller)
        if not isinstance(asked, _Asked):
            return asked
        try:
            created = api.payments.create(asked.request, asked.key, caller)
        except (IdempotencyKeyInUse, IdempotencyConflict) as exc:
            return _key_refused(exc)
        except stripe.StripeError as exc:
            return stripe_error_response(exc)
        return _created(created)

    @payments.get("/api/payments/<payment_intent_id>")
    @limits.status
    def get_payment(payment_intent_id: str) -> Answer:
        bind(payment_intent_id=payment_intent_id)
        details = find_payment_details(api.runtime.sessions, payment_intent_id)
        # The id names a payment; the client secret is the right to read it (operators read
        # any payment under /admin/). Without it the answer is that of an unknown id.
        allowed = details is not None and secret_matches(
            request.headers.get("X-Client-Secret"), details.payment.client_secret_sha256
        )
        if details is None or not allowed:
            return error_response(404, "not_found", "No payment with that PaymentIntent id.")
        return jsonify(payment_view(details)), 200

    return payments


def _caller(api: ApiContext) -> Caller | Answer:
    try:
        caller = current_caller(api.settings)
    except SessionTokenExpired as exc:
        return error_response(410, "checkout_session_expired", f"This {exc}.")
    except CallerRejected as exc:
        return error_response(401, "invalid_caller", str(exc))
    if caller is None:
        return error_response(
            401,
            "caller_required",
            "Send an API client key (Authorization: Bearer ...) or a checkout session "
            f"({SESSION_HEADER}: the token of a session from POST /api/checkout-sessions).",
        )
    return caller


@dataclass(frozen=True)
class _Asked:
    request: PaymentRequest
    key: str | None


def _payment_request(api: ApiContext, caller: Caller) -> _Asked | Answer:
    """What to create and under which key: a checkout session's own order (the session is its
    key: one PaymentIntent per session), or an API client's body and Idempotency-Key."""
    session_id = caller.checkout_session_id
    if session_id is not None and not request.content_length:
        body: Any = {}  # a session's browser need name nothing: the session says it all
    elif not request.is_json:
        return error_response(415, "unsupported_media_type", "Send the body as application/json.")
    else:
        try:
            body = read_json_body(MAX_API_BODY_BYTES)
        except InvalidJson:
            return error_response(400, "invalid_json", "The body is not valid JSON.")
    try:
        if session_id is None:
            key = validate_idempotency_key(request.headers.get("Idempotency-Key"))
            return _Asked(validate_payment_request(body), key)
        bind(checkout_session=session_id)
        if not isinstance(body, dict):
            raise ValidationError("body", "must be a JSON object")
        return _Asked(api.checkout_sessions.payment_request(session_id, body), session_id)
    except ValidationError as exc:
        return error_response(400, "invalid_request", exc.message, field=exc.field)
    except CheckoutSessionNotFound:
        return error_response(410, "checkout_session_expired", "This checkout session has ended.")
    except CheckoutSessionGone as exc:
        return error_response(410, exc.code, exc.message)
    except CheckoutSessionMismatch as exc:
        return error_response(
            409,
            "checkout_session_mismatch",
            f"{exc.field} is set by the checkout session and cannot be changed here; "
            "send it as the session has it, or leave it out.",
            field=exc.field,
        )


def _key_refused(exc: IdempotencyKeyInUse | IdempotencyConflict) -> Answer:
    if isinstance(exc, IdempotencyKeyInUse):
        response, status = error_response(
            409,
            "idempotency_key_in_use",
            "A request with this Idempotency-Key is still in progress; retry shortly.",
            field="Idempotency-Key",
        )
        response.headers["Retry-After"] = str(exc.retry_after_seconds)
        return response, status
    return error_response(
        409,
        "idempotency_key_reused",
        "This Idempotency-Key was already used with a different request body.",
        field="Idempotency-Key",
    )


def _created(created: PaymentCreated) -> Answer:
    response = jsonify(
        {
            "success": True,
            "clientSecret": created.client_secret,
            "paymentIntentId": created.payment_intent_id,
        }
    )
    bind(payment_intent_id=created.payment_intent_id)
    if not created.replayed:
        PAYMENT_ATTEMPTS.inc()
    log.info(
        "payment %s %s", created.payment_intent_id, "replayed" if created.replayed else "created"
    )
    # Stripe's own header name for an answer that repeats an earlier request's result.
    response.headers["Idempotent-Replayed"] = "true" if created.replayed else "false"
    return response, 200


def payment_view(details: PaymentDetails) -> dict[str, Any]:
    """The payment as the API shows it (camelCase): Stripe's PaymentIntent status and figures,
    its refunds (oldest first) and its latest dispute (or None). ``details`` comes from
    ``shared.payments.find_payment_details`` or ``payment_details`` (one session).

    ``amountRefunded`` is Stripe's charge.amount_refunded: refunds pending, requiring action
    or succeeded; a failed or canceled refund gave its amount back."""
    payment = details.payment
    last_error = None
    if payment.last_error_code or payment.last_error_message or payment.last_error_decline_code:
        last_error = {
            "code": payment.last_error_code,
            "declineCode": payment.last_error_decline_code,
            "message": payment.last_error_message,
        }
    return {
        "paymentIntentId": payment.payment_intent_id,
        "amount": payment.amount,
        "currency": payment.currency,
        "status": payment.status,
        "captureMethod": payment.capture_method,
        "amountReceived": payment.amount_received,
        "amountCapturable": payment.amount_capturable,
        "amountRefunded": details.amount_refunded,
        "refunds": [_refund_view(refund) for refund in details.refunds],
        "dispute": None if details.dispute is None else _dispute_view(details.dispute),
        # What the payment's creator asked for; who that was is checkoutSession's business.
        "metadata": {k: v for k, v in payment.metadata_.items() if k != CALLER_METADATA_KEY},
        "checkoutSession": _checkout_session_of(payment.caller),
        "lastError": last_error,
        "updatedAt": payment.updated_at.isoformat(),
    }


def _checkout_session_of(caller: str | None) -> str | None:
    session_id = None if caller is None else Caller(caller).checkout_session_id
    # Sessions of before checkout sessions were priced by the back end had no id to show.
    return session_id if session_id and session_id.startswith(SESSION_ID_PREFIX) else None


def _refund_view(refund: Refund) -> dict[str, Any]:
    return {
        "id": refund.id,
        "amount": refund.amount,
        "status": refund.status,
        "reason": refund.reason,
        "failureReason": refund.failure_reason,
        "created": refund.created.isoformat(),
    }


def _dispute_view(dispute: Dispute) -> dict[str, Any]:
    due = dispute.evidence_due_by
    return {
        "id": dispute.id,
        "status": dispute.status,
        "reason": dispute.reason,
        "amount": dispute.amount,
        "evidenceDueBy": None if due is None else due.isoformat(),
        "fundsWithdrawn": dispute.funds_withdrawn,
        "fundsReinstated": dispute.funds_reinstated,
    }
