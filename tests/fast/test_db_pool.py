"""The pool replaces a pooled connection that died while idle, and does not ping one that was
in use a moment ago; an autocommit engine's statements commit by themselves
(shared.db.make_engine)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.exc import OperationalError

from shared.db import make_engine

POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432"


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(fast_engine: Engine, pid: int) -> None:
    admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()


def test_a_connection_that_died_idle_is_replaced_not_handed_out(fast_engine):
    engine = make_engine(_url(fast_engine), pool_size=1, ping_idle_seconds=0)
    first = _backend_pid(engine)
    _terminate(fast_engine, first)

    # Without the ping this would raise "server closed the connection unexpectedly".
    second = _backend_pid(engine)

    assert second != first
    engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged_and_a_failure_renews_the_pool(
    fast_engine,
):
    """Under load nothing is pinged; a restart then fails the one statement that meets it
    (the task retries, as on any transient error) and the pool is renewed."""
    engine = make_engine(_url(fast_engine), pool_size=1, ping_idle_seconds=60)
    first = _backend_pid(engine)
    _terminate(fast_engine, first)

    with pytest.raises(OperationalError):
        _backend_pid(engine)
    assert _backend_pid(engine) != first
    engine.dispose()


def test_an_autocommit_statement_commits_by_itself(fast_engine):
    engine = make_engine(_url(fast_engine), pool_size=1, autocommit=True)
    table = f"autocommit_probe_{_backend_pid(fast_engine)}"
    insert = text(f"INSERT INTO {table} (id) VALUES (7) RETURNING id")  # noqa: S608 (ours)
    try:
        with engine.connect() as conn:
            conn.execute(text(f"CREATE TABLE {table} (id int)"))
            returned = conn.execute(insert).scalar()
            # Seen by another connection while this one has committed nothing itself.
            assert _exists(fast_engine, table)
            assert _count(fast_engine, table) == 1
        assert returned == 7
    finally:
        with engine.connect() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


def _exists(engine: Engine, table: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(func.to_regclass(table))).scalar() is not None


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608
