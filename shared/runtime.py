"""The runtime: the settings turned into what every entry point needs, built in one place.

The web app, the workers, the operator CLI and the admin API all take their sessions, cipher,
Stripe client, retry policy and event scope from ``build_runtime``, so a dependency is wired
once and the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import stripe
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

# Imported for what it does: it registers the service's own handlers (PaymentIntents, refunds,
# disputes) in every process that builds a runtime, web, workers and CLI alike.
import shared.payments.handlers  # noqa: F401
from shared.config import ConfigError, Settings
from shared.db import DatabaseBounds, make_engine, make_session_factory
from shared.infra.crypto import PayloadCipher
from shared.infra.green import GreenWaits
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


# The web process answers callers who wait: a statement or a lock wait past these is a 503 the
# caller can retry, not a request held for as long as the database takes.
WEB_STATEMENT_SECONDS = 5.0
WEB_LOCK_SECONDS = 2.0


def database_bounds(policy: RetryPolicy, *, answers_callers: bool) -> DatabaseBounds:
    """A worker's transaction may wait idle (a handler calling Stripe) for as long as its
    lease; past that its work is another's, so the server may end it and free its locks."""
    bounds = DatabaseBounds(idle_in_transaction_seconds=policy.lease_seconds)
    if not answers_callers:
        return bounds
    return replace(bounds, statement_seconds=WEB_STATEMENT_SECONDS, lock_seconds=WEB_LOCK_SECONDS)


def web_green_waits() -> GreenWaits:
    """The web's waits under gevent, from the same bounds as its sessions. Connected, an answer
    is owed within the statement timeout (the server answers a statement it cancels too); a
    margin past that, the server is gone."""
    return GreenWaits(
        connect_seconds=DatabaseBounds().connect_seconds,
        query_seconds=WEB_STATEMENT_SECONDS + 2.0,
    )


def check_handler_queues(handlers: HandlerRegistry, settings: Settings) -> None:
    """A handler's queue nobody declared would swallow its runs: refuse to start instead."""
    missing = handlers.queues() - set(settings.handler_queues)
    if missing:
        raise ConfigError(
            f"handlers run on queue(s) HANDLER_QUEUES does not list: {', '.join(sorted(missing))}"
            " (list them, and run a worker on each)"
        )


def build_runtime(settings: Settings, *, answers_callers: bool = False) -> Runtime:
    """Build it after fork, never before: a database connection is not shared across fork.
    ``answers_callers``: the web process, whose every statement has a caller waiting."""
    load_handler_modules(settings.handler_modules)
    check_handler_queues(registry, settings)
    client = make_stripe_client(settings)
    policy = RetryPolicy.from_settings(settings)
    bounds = database_bounds(policy, answers_callers=answers_callers)
    url = settings.database_url
    cipher = PayloadCipher(settings.encryption_keys)
    return Runtime(
        settings=settings,
        sessions=make_session_factory(make_engine(url, bounds=bounds), cipher),
        # Statements hold a connection for a millisecond: a few suffice. An engine opens
        # nothing until used, so processes that never write this way pay nothing.
        statements=make_engine(url, pool_size=2, max_overflow=3, autocommit=True, bounds=bounds),
        cipher=cipher,
        stripe_client=client,
        gateway=StripeGateway(client),
        policy=policy,
        scope=EventScope.of(settings),
        registry=registry,
    )
