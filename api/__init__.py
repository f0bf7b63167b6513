"""The HTTP API: an app factory that wires one blueprint per area onto the shared runtime.

Areas: ``checkout`` (the page and checkout sessions), ``payments`` (create and read),
``webhook`` (Stripe's deliveries), ``ops`` (health, readiness, metrics, OpenAPI), ``admin``
(the operators' API) and ``admin_payments`` (the operators' refunds, captures and cancels).
Errors share one envelope (``api.errors``). Logic lives in ``shared``.
"""

from __future__ import annotations

from flask import Flask

from api.admin import make_admin_blueprint
from api.admin_effects import admin_effects_blueprint
from api.admin_payments import admin_payments_blueprint
from api.bodies import MAX_WEBHOOK_BYTES, read_capped_body
from api.checkout import checkout_blueprint
from api.context import ApiContext, make_limits
from api.errors import error_response, register_error_handlers, stripe_error_response
from api.hooks import install_request_hooks
from api.ops import ops_blueprint
from api.payments import payments_blueprint
from api.webhook import webhook_blueprint
from shared.config import Settings, load_settings
from shared.infra.broker import make_producer
from shared.infra.stripe_gateway import PaymentGateway
from shared.ledger.receive.publisher import WEBHOOK_BROKER_CONNECT_SECONDS, EventPublisher
from shared.observability.logs import install_redaction
from shared.payments import PaymentService
from shared.payments.checkout_sessions import CheckoutSessions
from shared.runtime import build_runtime

__all__ = ["create_app", "error_response", "read_capped_body", "stripe_error_response"]


def create_app(settings: Settings | None = None, *, gateway: PaymentGateway | None = None) -> Flask:
    settings = settings or load_settings()
    install_redaction()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_WEBHOOK_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    install_request_hooks(app, settings)
    register_error_handlers(app)

    runtime = build_runtime(settings, answers_callers=True)
    # A caller waits on every publish: a broker that stops answering costs a webhook seconds.
    producer = make_producer(settings, connect_timeout_seconds=WEBHOOK_BROKER_CONNECT_SECONDS)
    api = ApiContext(
        runtime=runtime,
        payments=PaymentService(
            runtime.sessions,
            gateway or runtime.gateway,
            statements=runtime.statements,
            lease_seconds=settings.create_lease_seconds,
        ),
        checkout_sessions=CheckoutSessions(
            runtime.sessions,
            settings.encryption_keys,
            max_failed_attempts=settings.checkout_max_failed_attempts,
        ),
        producer=producer,
        events=EventPublisher(producer),
    )
    limits = make_limits(app, settings)
    app.register_blueprint(checkout_blueprint(api, limits))
    app.register_blueprint(payments_blueprint(api, limits))
    app.register_blueprint(webhook_blueprint(api))
    app.register_blueprint(ops_blueprint(api, limits))
    app.register_blueprint(make_admin_blueprint(api, limits))
    app.register_blueprint(admin_payments_blueprint(api, limits))
    app.register_blueprint(admin_effects_blueprint(api, limits))
    return app
