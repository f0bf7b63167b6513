"""What the blueprints share: the runtime, the services built on it, and the rate limits."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from celery import Celery
from flask import Flask, request
from flask_limiter import Limiter

from shared.config import Settings
from shared.ledger.receive.publisher import EventPublisher
from shared.payments import PaymentService
from shared.payments.checkout_sessions import CheckoutSessions
from shared.runtime import Runtime


@dataclass(frozen=True)
class ApiContext:
    runtime: Runtime
    payments: PaymentService
    checkout_sessions: CheckoutSessions
    producer: Celery
    events: EventPublisher

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def has_bearer(self, token: str | None) -> bool:
        """Whether the request carries ``Authorization: Bearer <token>`` (compared in
        constant time); never true for an unset token."""
        offered = request.headers.get("Authorization", "")
        return bool(token) and hmac.compare_digest(offered.encode(), f"Bearer {token}".encode())


UNLIMITED_ENDPOINTS = frozenset({"webhook.receive"})


@dataclass(frozen=True)
class Limits:
    """Budgets per client address, each route group its own: a page polling for its result is
    never starved by creation, and probes and the operator API cannot be hammered for free.
    Stripe delivers webhooks in bursts and retries what we refuse: /webhook is never limited."""

    create: Any
    status: Any
    probe: Any
    admin: Any


def make_limits(app: Flask, settings: Settings) -> Limits:
    limiter = Limiter(
        key_func=lambda: request.remote_addr or "unknown",
        app=app,
        storage_uri=settings.rate_limit_storage_url or settings.redis_url,
        # Off: the limiter would put its own Retry-After (its window's end) on every answer,
        # overwriting a 409's one second, and read its window back from Redis for each request
        # to do so. A 429 says when to retry itself (api.errors).
        headers_enabled=False,
        strategy="moving-window",
        # If Redis is unreachable, count per process instead of failing the request.
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        key_prefix="payments-ratelimit",
    )
    # Not limited, and not even looked at: the limiter's bookkeeping costs a /webhook call a
    # fifth of its time (make bench), and Stripe's deliveries must never wait on it.
    limiter.request_filter(lambda: request.endpoint in UNLIMITED_ENDPOINTS)
    return Limits(
        create=limiter.shared_limit(settings.rate_limit, scope="create"),
        status=limiter.shared_limit(settings.status_rate_limit, scope="status"),
        probe=limiter.shared_limit(settings.probe_rate_limit, scope="probe"),
        admin=limiter.limit(settings.admin_rate_limit, scope="admin"),
    )
