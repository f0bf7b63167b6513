"""The runtime: the settings turned into what every entry point needs, built in one place.

The web app, the workers, the operator CLI and the admin API all take their sessions, cipher,
Stripe client, retry policy and event scope from ``build_runtime``, so a dependency is wired
once and the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import stripe
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

# Imported for what it does: it registers the service's own handlers (PaymentIntents, refunds,
# disputes) in every process that builds a runtime, web, workers and CLI alike.
import shared.payments.handlers  # noqa: F401
from shared.config import Settings
from shared.db import make_engine, make_session_factory
from shared.infra.crypto import PayloadCipher
from shared.infra.stripe_gateway import StripeGateway, make_stripe_client
from shared.ledger.event_rules import EventScope
from shared.ledger.handlers import HandlerRegistry, load_handler_modules, registry
from shared.ledger.retry import RetryPolicy


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    sessions: sessionmaker[Session]
    # Each statement commits by itself: for a hot path's single-statement writes
    # (create-payment's claim and attach), one round trip where a transaction takes three.
    statements: Engine
    cipher: PayloadCipher
    stripe_client: stripe.StripeClient
    gateway: StripeGateway
    policy: RetryPolicy
    scope: EventScope
    # The handlers every ledger call of this process applies: the service's own and those of
    # HANDLER_MODULES, registered as their modules are imported.
    registry: HandlerRegistry


def build_runtime(settings: Settings) -> Runtime:
    """Build it after fork, never before: a database connection is not shared across fork."""
    load_handler_modules(settings.handler_modules)
    client = make_stripe_client(settings)
    return Runtime(
        settings=settings,
        sessions=make_session_factory(make_engine(settings.database_url)),
        # Statements hold a connection for a millisecond: a few suffice. An engine opens
        # nothing until used, so processes that never write this way pay nothing.
        statements=make_engine(settings.database_url, pool_size=2, max_overflow=3, autocommit=True),
        cipher=PayloadCipher(settings.encryption_keys),
        stripe_client=client,
        gateway=StripeGateway(client),
        policy=RetryPolicy.from_settings(settings),
        scope=EventScope.of(settings),
        registry=registry,
    )
