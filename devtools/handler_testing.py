"""A pytest plugin for handler authors (entry point ``pytest11``: on as soon as this service is
installed): deliver a Stripe event through the real ledger and registry, on a real PostgreSQL,
inside a transaction rolled back at the end of the test, and see which runs it left and which
side effects its handlers asked for.

    def test_a_paid_order(payments_kit):
        event = payments_kit.event("payment_intent.succeeded", amount=1999, receipt_email="a@b.c")
        delivered = payments_kit.deliver(event)
        assert delivered.runs["shop.mark_paid"] == "done"
        assert delivered.effects["shop.mark_paid", "receipt"].payload["to"] == "a@b.c"

The database: ``PAYMENTS_TEST_DATABASE_URL``, or a database of the test run's own on the local
PostgreSQL (created, migrated with the service's migrations and any package's, dropped at the
end). Nothing is imported from the service until a fixture is used: the plugin costs a test
run that does not use it nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

DEFAULT_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432"
# Protects nothing: the kit's events never leave its rolled-back transaction.
KIT_KEY = "a2l0LW9ubHkta2V5LW5vdC1zZWNyZXQtYXQtYWxsISE="


@dataclass(frozen=True)
class AskedEffect:
    kind: str
    payload: dict[str, Any]
    idempotency_key: str


@dataclass
class Delivered:
    """What one delivery left: each run's status and last error, and every effect asked for
    (decrypted), by (handler, effect name)."""

    event_id: str
    runs: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    effects: dict[tuple[str, str], AskedEffect] = field(default_factory=dict)


class PaymentsKit:
    def __init__(self, sessions: Any, registry: Any) -> None:
        from shared.infra.crypto import PayloadCipher
        from shared.ledger.retry import RetryPolicy

        self.sessions = sessions
        self.registry = registry
        self.cipher = PayloadCipher((KIT_KEY,))
        # Every failure is final at once: a test sees the first error, not a retry schedule.
        self.policy = RetryPolicy(
            max_transient_attempts=1, max_permanent_attempts=1, base_seconds=0, cap_seconds=0
        )

    def event(self, event_type: str, **fields: Any) -> dict[str, Any]:
        """A Stripe-shaped event of ``event_type``: its object from the vendored Stripe fixtures
        where the type's object is one of them, with ``fields`` over it."""
        from devtools import stripe_events
        from shared.ledger.event_rules import expected_object

        kind = expected_object(event_type)
        try:
            obj = stripe_events.resource(kind) if kind else {}
        except KeyError:
            obj = {"object": kind}
        obj.update(id=fields.pop("id", None) or stripe_events.new_id("obj"))
        obj.update(fields)
        return stripe_events.event(event_type, obj)

    def deliver(self, event: dict[str, Any]) -> Delivered:
        """Deliver ``event`` as the worker does: recorded and its handlers applied in one
        transaction, then each handler of a queue of its own as its task runs it."""
        from shared.ledger.ingest.first_delivery import record_and_apply
        from shared.ledger.runs.task import run_handler_once

        _, _, pending = record_and_apply(
            self.sessions, event, "webhook", self.cipher, None, self.policy, registry=self.registry
        )
        for handler in pending:
            policy = self.registry.retry_policy(handler, self.policy)
            run_handler_once(
                self.sessions,
                event["id"],
                handler,
                self.cipher,
                None,
                policy,
                registry=self.registry,
            )
        return self.outcome(event["id"])

    def deliver_twice(self, event: dict[str, Any]) -> tuple[Delivered, Delivered]:
        """The same event delivered twice, as Stripe does: the second must change nothing."""
        return self.deliver(event), self.deliver(event)

    def deliver_in_order(self, *events: dict[str, Any]) -> list[Delivered]:
        """Events delivered in the order given (say, a later one before an earlier one)."""
        return [self.deliver(event) for event in events]

    def outcome(self, event_id: str) -> Delivered:
        from sqlalchemy import select

        from shared.models import HandlerRun, OutboxEffect

        delivered = Delivered(event_id)
        with self.sessions() as session:
            for run in session.scalars(select(HandlerRun).where(HandlerRun.event_id == event_id)):
                delivered.runs[run.handler] = run.status
                if run.last_error:
                    delivered.errors[run.handler] = run.last_error
            rows = session.scalars(select(OutboxEffect).where(OutboxEffect.event_id == event_id))
            for row in rows:
                payload = self.cipher.decrypt(row.payload_encrypted)
                effect = AskedEffect(row.kind, payload, row.idempotency_key)
                delivered.effects[row.handler, row.name] = effect
        return delivered


@pytest.fixture(scope="session")
def payments_database_url() -> Iterator[str]:
    """A migrated database for the kit: PAYMENTS_TEST_DATABASE_URL, or one of this run's own."""
    from sqlalchemy import create_engine, text

    from shared.db import upgrade

    given = os.environ.get("PAYMENTS_TEST_DATABASE_URL")
    url = given or f"{DEFAULT_SERVER}/payments_kit_{os.getpid()}"
    upgrade(url)
    yield url
    if given is None:
        admin = create_engine(f"{DEFAULT_SERVER}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "payments_kit_{os.getpid()}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def payments_kit(payments_database_url: str) -> Iterator[PaymentsKit]:
    """The kit, on a transaction rolled back when the test ends: the code under test commits as
    usual (savepoints), and nothing persists. Handlers come from the process's registry, the
    installed packages' ``payments.handlers`` entry points and HANDLER_MODULES loaded."""
    from sqlalchemy.orm import sessionmaker

    from shared.db import make_engine
    from shared.effects.outbox import CIPHER_INFO_KEY
    from shared.infra.crypto import PayloadCipher
    from shared.ledger.handlers import load_handler_modules, registry

    modules = os.environ.get("HANDLER_MODULES", "")
    load_handler_modules(tuple(m.strip() for m in modules.split(",") if m.strip()))
    engine = make_engine(payments_database_url)
    connection = engine.connect()
    outer = connection.begin()
    sessions = sessionmaker(
        bind=connection,
        join_transaction_mode="create_savepoint",
        expire_on_commit=False,
        info={CIPHER_INFO_KEY: PayloadCipher((KIT_KEY,))},
    )
    try:
        yield PaymentsKit(sessions, registry)
    finally:
        outer.rollback()
        connection.close()
        engine.dispose()
