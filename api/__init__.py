"""The HTTP API: parse, validate, call ``shared``, map errors to status codes."""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import stripe
from flask import Flask, Response, jsonify, render_template, request
from flask_limiter import Limiter, RateLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from api.admin import make_admin_blueprint
from api.openapi import openapi_document
from shared.callers import (
    SESSION_COOKIE,
    SESSION_HEADER,
    SESSION_MAX_AGE_SECONDS,
    Caller,
    CallerRejected,
    identify_caller,
    new_session_token,
    secret_matches,
)
from shared.config import Settings, load_settings
from shared.crypto import PayloadCipher
from shared.db import make_engine, make_session_factory
from shared.handlers import load_handler_modules
from shared.health import broker_ready, database_ready
from shared.logging import bind, clear_context, current_ids, install_redaction
from shared.metrics import (
    EVENTS_REFUSED,
    PAYMENT_ATTEMPTS,
    WEBHOOK_EVENTS,
    WEBHOOK_LATENCY,
    WEBHOOK_SECRET_MATCHES,
    scrape_registry,
)
from shared.payments import (
    IdempotencyConflict,
    IdempotencyKeyInUse,
    PaymentService,
    payment_view,
)
from shared.queue import EventPublisher, make_producer
from shared.reconcile import StripeEventSource
from shared.redaction import redact
from shared.stripe_gateway import PaymentGateway, StripeGateway, make_stripe_client
from shared.validation import ValidationError, validate_idempotency_key, validate_payment_request
from shared.webhooks import EventRefused, EventScope, WebhookRejected, verify_delivery

log = logging.getLogger(__name__)

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,100}")

# Stripe's events are a few kilobytes; anything near this is not a Stripe event.
MAX_WEBHOOK_BYTES = 512 * 1024
# The largest valid create-payment body (50 metadata keys of 40 characters with values of 500)
# is under 30 KiB; a body past this is refused before it is read or parsed.
MAX_API_BODY_BYTES = 64 * 1024


def error_response(status: int, code: str, message: str, **extra: Any) -> tuple[Response, int]:
    error: dict[str, Any] = {"code": code, "message": message, **extra}
    return jsonify({"success": False, "error": error}), status


def create_app(settings: Settings | None = None, *, gateway: PaymentGateway | None = None) -> Flask:
    settings = settings or load_settings()
    install_redaction()
    app = Flask(__name__)
    if settings.trusted_proxy_hops:
        # Only as many X-Forwarded-* hops as there are proxies we run: anything further left
        # was written by the client and proves nothing.
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    # Budgets per client address, each route group its own: a page polling for its result is
    # never starved by creation, and probes and the operator API cannot be hammered for free.
    # Stripe delivers webhooks in bursts and retries what we refuse: /webhook is never limited.
    limiter = Limiter(
        key_func=lambda: request.remote_addr or "unknown",
        app=app,
        storage_uri=settings.rate_limit_storage_url or settings.redis_url,
        headers_enabled=True,
        strategy="moving-window",
        # If Redis is unreachable, count per process instead of failing the request.
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        key_prefix="payments-ratelimit",
    )
    create_limit = limiter.shared_limit(settings.rate_limit, scope="create")
    status_limit = limiter.shared_limit(settings.status_rate_limit, scope="status")
    probe_limit = limiter.shared_limit(settings.probe_rate_limit, scope="probe")
    app.config["MAX_CONTENT_LENGTH"] = MAX_WEBHOOK_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]

    load_handler_modules(settings.handler_modules)
    sessions = make_session_factory(make_engine(settings.database_url))
    stripe_client = make_stripe_client(settings)
    payments = PaymentService(
        sessions,
        gateway or StripeGateway(stripe_client),
        lease_seconds=settings.create_lease_seconds,
    )
    producer = make_producer(settings)
    events = EventPublisher(producer)
    cipher = PayloadCipher(settings.encryption_keys)
    event_scope = EventScope.of(settings)
    admin = make_admin_blueprint(
        settings, sessions, producer, StripeEventSource(stripe_client).retrieve
    )
    limiter.limit(settings.admin_rate_limit, scope="admin")(admin)
    app.register_blueprint(admin)

    def current_caller() -> Caller | None:
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

    def has_admin_token() -> bool:
        offered = request.headers.get("Authorization", "")
        return bool(settings.admin_token) and hmac.compare_digest(
            offered.encode(), f"Bearer {settings.admin_token}".encode()
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        code = (exc.name or "error").lower().replace(" ", "_")
        response, status = error_response(exc.code or 500, code, exc.description or exc.name)
        # Keep what the exception says in headers (Allow on a 405), with our JSON body.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        if isinstance(exc, RateLimitExceeded):
            response.headers["Retry-After"] = str(_retry_after_seconds(exc))
        return response, status

    @app.before_request
    def bind_request_id() -> None:
        clear_context()
        offered = request.headers.get("X-Request-Id", "")
        # A proxy's id joins our lines to its own; anything odd is replaced, not trusted.
        request_id = offered if REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
        bind(request_id=request_id)

    @app.after_request
    def security_headers(response: Response) -> Response:
        request_id = current_ids().get("request_id")
        if request_id:
            response.headers["X-Request-Id"] = request_id
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"
        )
        if request.path.startswith(("/api/", "/admin/", "/webhook")):
            # Responses carry client secrets and payment state: never cache them anywhere.
            response.headers["Cache-Control"] = "no-store"
        if request.is_secure:
            response.headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
        return response

    @app.errorhandler(OperationalError)
    @app.errorhandler(SQLAlchemyTimeoutError)
    def database_unavailable(exc: Exception) -> tuple[Response, int]:
        log.error("database unavailable on %s %s: %s", request.method, request.path, exc)
        response, status = error_response(
            503, "database_unavailable", "The service is briefly unavailable; try again."
        )
        response.headers["Retry-After"] = "5"
        return response, status

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Something went wrong on our side.")

    @app.get("/")
    def checkout() -> Response:
        # The page's checkout session: the caller its payments and idempotency keys belong to.
        # A reload keeps the session, so a retried order replays rather than charging again.
        try:
            session_token = request.cookies.get(SESSION_COOKIE)
            fresh = session_token is None or current_caller() is None
        except CallerRejected:
            fresh = True
        page = Response(
            render_template(
                "checkout.html",
                stripe_js_url=settings.stripe_js_url,
                publishable_key=settings.stripe_publishable_key,
                status_timeout_ms=settings.checkout_status_timeout_seconds * 1000,
            )
        )
        stripe_origin = _origin(settings.stripe_js_url)
        # Stripe.js needs its own scripts, frames (card fields, 3-D Secure) and API calls.
        page.headers["Content-Security-Policy"] = (
            f"default-src 'self'; script-src 'self' {stripe_origin}; "
            f"frame-src {stripe_origin} https://*.stripe.com; "
            f"connect-src 'self' {stripe_origin} https://api.stripe.com "
            f"{settings.stripe_api_base or ''}; "
            "img-src 'self' data: https://*.stripe.com; style-src 'self' 'unsafe-inline'; "
            "frame-ancestors 'none'"
        )
        if fresh:
            with_session_cookie(page, new_session_token(settings.encryption_keys))
        return page

    @app.post("/api/checkout-sessions")
    @create_limit
    def create_checkout_session() -> tuple[Response, int]:
        token = new_session_token(settings.encryption_keys)
        response = jsonify({"checkoutSession": token, "header": SESSION_HEADER})
        return with_session_cookie(response, token), 201

    @app.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(openapi_document())

    @app.get("/metrics")
    def metrics() -> Response | tuple[Response, int]:
        # Off the public API unless a scraper proves itself: the figures tell an attacker how
        # the service is doing (and what it refuses).
        offered = request.headers.get("Authorization", "")
        if not settings.metrics_token or not hmac.compare_digest(
            offered.encode(), f"Bearer {settings.metrics_token}".encode()
        ):
            return error_response(404, "not_found", "The requested URL was not found.")
        registry = scrape_registry(settings.prometheus_multiproc_dir)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/readyz")
    @probe_limit
    def readyz() -> tuple[Response, int]:
        checks = {"database": database_ready(sessions), "broker": broker_ready(producer)}
        failed = sorted(name for name, ok in checks.items() if not ok)
        if failed:
            log.warning("not ready: %s unreachable", ", ".join(failed))
            return jsonify({"status": "unavailable", "failed": failed, "checks": checks}), 503
        return jsonify({"status": "ready", "failed": [], "checks": checks}), 200

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.post("/api/create-payment")
    @create_limit
    def create_payment() -> tuple[Response, int]:
        try:
            caller = current_caller()
        except CallerRejected as exc:
            return error_response(401, "invalid_caller", str(exc))
        if caller is None:
            return error_response(
                401,
                "caller_required",
                "Send an API client key (Authorization: Bearer ...) or a checkout session "
                f"({SESSION_HEADER}, from POST /api/checkout-sessions).",
            )
        if not request.is_json:
            return error_response(
                415, "unsupported_media_type", "Send the body as application/json."
            )
        try:
            body = read_json_body(MAX_API_BODY_BYTES)
        except InvalidJson:
            return error_response(400, "invalid_json", "The body is not valid JSON.")
        try:
            payment_request = validate_payment_request(body)
            key = validate_idempotency_key(request.headers.get("Idempotency-Key"))
        except ValidationError as exc:
            return error_response(400, "invalid_request", exc.message, field=exc.field)
        try:
            created = payments.create(payment_request, key, caller)
        except IdempotencyKeyInUse as exc:
            response, status = error_response(
                409,
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is still in progress; retry shortly.",
                field="Idempotency-Key",
            )
            response.headers["Retry-After"] = str(exc.retry_after_seconds)
            return response, status
        except IdempotencyConflict:
            return error_response(
                409,
                "idempotency_key_reused",
                "This Idempotency-Key was already used with a different request body.",
                field="Idempotency-Key",
            )
        except stripe.StripeError as exc:
            return stripe_error_response(exc)
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
            "payment %s %s",
            created.payment_intent_id,
            "replayed" if created.replayed else "created",
        )
        # Stripe's own header name for an answer that repeats an earlier request's result.
        response.headers["Idempotent-Replayed"] = "true" if created.replayed else "false"
        return response, 200

    @app.get("/api/payments/<payment_intent_id>")
    @status_limit
    def get_payment(payment_intent_id: str) -> tuple[Response, int]:
        bind(payment_intent_id=payment_intent_id)
        payment = payments.get(payment_intent_id)
        # The id names a payment; the client secret (or the operators' token) is the right to
        # read it. Without that proof the answer is the same as for an id that does not exist.
        allowed = payment is not None and (
            secret_matches(request.headers.get("X-Client-Secret"), payment.client_secret_sha256)
            or has_admin_token()
        )
        if payment is None or not allowed:
            return error_response(404, "not_found", "No payment with that PaymentIntent id.")
        return jsonify(payment_view(payment)), 200

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        started = time.perf_counter()
        try:
            return receive_webhook()
        finally:
            WEBHOOK_LATENCY.observe(time.perf_counter() - started)

    def receive_webhook() -> tuple[Response, int]:
        # Raw bytes: the signature covers the body exactly as sent.
        try:
            body = read_capped_body(MAX_WEBHOOK_BYTES)
        except RequestEntityTooLarge:
            WEBHOOK_EVENTS.labels(type="unknown", result="rejected").inc()
            raise
        try:
            delivery = verify_delivery(
                body,
                request.headers.get("Stripe-Signature"),
                settings.stripe_webhook_secrets,
                settings.webhook_tolerance_seconds,
                event_scope,
            )
        except EventRefused as exc:
            EVENTS_REFUSED.labels(reason=exc.code, stage="webhook").inc()
            log.warning("webhook %s refused: %s", exc.event_id, exc.code)
            if exc.acknowledge:
                WEBHOOK_EVENTS.labels(type=exc.event_type, result="ignored").inc()
                return jsonify({"received": True, "ignored": exc.code}), 200
            WEBHOOK_EVENTS.labels(type=exc.event_type, result="rejected").inc()
            return error_response(400, exc.code, exc.message)
        except WebhookRejected as exc:
            WEBHOOK_EVENTS.labels(type="unknown", result="rejected").inc()
            log.warning("webhook rejected: %s", exc.code)
            return error_response(400, exc.code, exc.message)
        try:
            events.publish(delivery.event, "webhook", cipher)
        except BrokerError:
            WEBHOOK_EVENTS.labels(type=delivery.event_type, result="broker_error").inc()
            log.exception("broker refused event %s", delivery.event_id)
            return error_response(
                503, "queue_unavailable", "Could not queue the event; Stripe will retry."
            )
        bind(event_id=delivery.event_id)
        WEBHOOK_SECRET_MATCHES.labels(secret_index=str(delivery.secret_index)).inc()
        WEBHOOK_EVENTS.labels(type=delivery.event_type, result="queued").inc()
        log.info(
            "webhook %s (%s) queued, verified with secret #%d",
            delivery.event_id,
            delivery.event_type,
            delivery.secret_index,
        )
        return jsonify({"received": True}), 200

    return app


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class InvalidJson(Exception):
    """The body does not parse as JSON (nesting too deep for the parser included)."""


def read_json_body(limit: int) -> Any:
    """The request's JSON; 413 past ``limit`` before anything is parsed."""
    raw = read_capped_body(limit)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidJson() from None


def read_capped_body(limit: int) -> bytes:
    """The request body, or 413 once it is longer than ``limit``, without reading past it.

    A declared Content-Length is checked before anything is read. A chunked body has none, and
    Werkzeug's own limit silently truncates it (a truncated webhook would then fail its
    signature with a misleading 400), so read one byte past the limit and refuse.
    """
    if request.content_length is not None:
        if request.content_length > limit:
            raise RequestEntityTooLarge()
        return request.get_data(cache=False)
    if not request.environ.get("wsgi.input_terminated"):
        return b""  # a server that cannot frame a chunked body: nothing is safe to read
    body: bytes = request.environ["wsgi.input"].read(limit + 1)
    if len(body) > limit:
        raise RequestEntityTooLarge()
    return body


def _retry_after_seconds(exc: RateLimitExceeded) -> int:
    # The window's length is the longest a client may have to wait; never advise 0.
    return max(1, int(exc.limit.limit.get_expiry()))


def stripe_error_response(exc: stripe.StripeError) -> tuple[Response, int]:
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
    log.error("Stripe error %s (HTTP %s)", type(exc).__name__, exc.http_status)
    return error_response(502, "stripe_error", "Stripe could not process the request.")
