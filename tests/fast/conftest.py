"""The fast layer: ledger and payment logic called directly, on a real PostgreSQL, each test
inside a transaction that is rolled back (no worker, no Redis queue, no stand-in, no polling).

One database for the fast layer, migrated once per run and dropped afterwards; every test sees
it empty, because whatever a test wrote is rolled back when it ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

# The service's own handlers, registered as in every process (the runtime imports them).
import shared.payments.handlers  # noqa: F401
from shared.db import make_engine, upgrade
from shared.infra.crypto import PayloadCipher

POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432"
# base64 of "test-only-key-one-not-secret-32b": a valid Fernet key that protects nothing.
FAST_KEY = "dGVzdC1vbmx5LWtleS1vbmUtbm90LXNlY3JldC0zMmI="


@pytest.fixture(scope="session")
def fast_engine() -> Iterator[Engine]:
    url = f"{POSTGRES}/payments_fast_{os.getpid()}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()
    admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "payments_fast_{os.getpid()}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def db(fast_engine: Engine) -> Iterator[sessionmaker[Session]]:
    """A session factory whose every transaction is a savepoint inside one that is rolled
    back at the end of the test: the code under test commits as usual, nothing persists."""
    connection = fast_engine.connect()
    outer = connection.begin()
    factory = sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    try:
        yield factory
    finally:
        outer.rollback()
        connection.close()


@pytest.fixture
def cipher() -> PayloadCipher:
    return PayloadCipher((FAST_KEY,))
