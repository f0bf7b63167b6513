"""The service runs as a PostgreSQL role of its own (issue 23, item 5): compose's init script
(shared/ops/postgres/app-role.sh) makes it on a fresh database, the owner role migrates, and the
app role then does all the service does (create sessions and payments, prune) and nothing
more: no DDL, no superuser."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from api import create_app
from devtools.processes import REPO_ROOT
from shared.db import make_session_factory, upgrade
from shared.ledger.retention import prune
from tests.conftest import API_CLIENT_KEY

SCRIPT = REPO_ROOT / "shared" / "ops" / "postgres" / "app-role.sh"
SERVER = "127.0.0.1:5432"
DDL = (
    "CREATE TABLE intruder (id int)",
    "DROP TABLE payments",
    "ALTER TABLE payments ADD COLUMN x int",
    "TRUNCATE stripe_events",
)


@dataclass(frozen=True)
class Roles:
    owner_url: str
    app_url: str


@pytest.fixture
def roles() -> Iterator[Roles]:
    suffix = secrets.token_hex(4)
    owner, app_user, database = f"owner_{suffix}", f"app_{suffix}", f"payments_roles_{suffix}"
    admin = create_engine(f"postgresql+psycopg2://postgres@{SERVER}/postgres")
    admin = admin.execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE ROLE "{owner}" LOGIN CREATEROLE'))
        connection.execute(text(f'CREATE DATABASE "{database}" OWNER "{owner}"'))
    try:
        env = {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": "5432",
            "POSTGRES_USER": owner,
            "POSTGRES_DB": database,
            "APP_DB_USER": app_user,
            "APP_DB_PASSWORD": secrets.token_hex(12),
        }
        made = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        owner_url = f"postgresql+psycopg2://{owner}@{SERVER}/{database}"
        upgrade(owner_url)
        yield Roles(owner_url, f"postgresql+psycopg2://{app_user}@{SERVER}/{database}")
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            connection.execute(text(f'DROP ROLE IF EXISTS "{app_user}"'))
            connection.execute(text(f'DROP ROLE IF EXISTS "{owner}"'))
        admin.dispose()


def test_the_app_role_runs_the_service_and_changes_no_schema(roles, settings, stand_in):
    app = create_app(replace(settings, database_url=roles.app_url)).test_client()
    auth = {"Authorization": f"Bearer {API_CLIENT_KEY}"}

    session = app.post(
        "/api/checkout-sessions", json={"amount": 1500, "currency": "usd"}, headers=auth
    )
    paid = app.post(
        "/api/create-payment", headers={"X-Checkout-Session": session.get_json()["token"]}
    )
    engine = create_engine(roles.app_url)
    pruned = prune(make_session_factory(engine), dt.timedelta(days=90), 0)

    assert session.status_code == 201
    assert paid.status_code == 200, paid.get_json()
    assert pruned.events == 0
    superuser = text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    with engine.connect() as connection:
        assert connection.execute(superuser).scalar() is False
        for ddl in DDL:
            with pytest.raises(ProgrammingError):
                connection.execute(text(ddl))
            connection.rollback()
    engine.dispose()
