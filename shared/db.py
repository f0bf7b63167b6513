"""Database engine, sessions and the `db upgrade` operation."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, Executable, Result, Row, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


# A pooled connection idle longer than this is pinged before it is handed out.
PING_IDLE_SECONDS = 1.0


@dataclass(frozen=True)
class DatabaseBounds:
    """How long a connection waits on PostgreSQL, on both sides, before it gives up.

    A host that stops answering (a crash, a partition: no RST, no FIN) would otherwise hold a
    wait for the kernel's TCP retries (minutes) and, on the server, its transaction and row
    locks for as long as Linux's keepalive defaults (two hours). Keepalives end an idle dead
    connection within ``keepalive_seconds``, on our side and, through the session's own
    settings, on the server's, which then rolls the dead client's transaction back and frees
    its locks. ``tcp_user_timeout`` ends one whose sent bytes go unacknowledged. A session idle
    in a transaction longer than ``idle_in_transaction_seconds`` is ended by the server.
    ``statement_seconds`` and ``lock_seconds`` bound each statement where a caller waits for
    the answer (the web process); workers bound theirs per transaction (limit_statements)."""

    connect_seconds: int = 5
    keepalive_idle_seconds: int = 10
    keepalive_interval_seconds: int = 5
    keepalive_count: int = 3
    idle_in_transaction_seconds: float = 600.0
    statement_seconds: float | None = None
    lock_seconds: float | None = None

    @property
    def keepalive_seconds(self) -> int:
        """A dead idle connection is known within this."""
        return self.keepalive_idle_seconds + self.keepalive_interval_seconds * self.keepalive_count

    def connect_args(self) -> dict[str, Any]:
        server = {
            "tcp_keepalives_idle": self.keepalive_idle_seconds,
            "tcp_keepalives_interval": self.keepalive_interval_seconds,
            "tcp_keepalives_count": self.keepalive_count,
            # Keepalives only probe a connection with nothing unacknowledged: a client cut off
            # before it acknowledged the server's last answer would otherwise hold its locks
            # for the kernel's retransmissions (about 15 minutes).
            "tcp_user_timeout": self.keepalive_seconds * 1000,
            "idle_in_transaction_session_timeout": _ms(self.idle_in_transaction_seconds),
        }
        if self.statement_seconds is not None:
            server["statement_timeout"] = _ms(self.statement_seconds)
        if self.lock_seconds is not None:
            server["lock_timeout"] = _ms(self.lock_seconds)
        return {
            "connect_timeout": self.connect_seconds,
            "keepalives": 1,
            "keepalives_idle": self.keepalive_idle_seconds,
            "keepalives_interval": self.keepalive_interval_seconds,
            "keepalives_count": self.keepalive_count,
            "tcp_user_timeout": self.keepalive_seconds * 1000,
            "options": " ".join(f"-c {name}={value}" for name, value in server.items()),
        }


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def make_engine(
    database_url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    ping_idle_seconds: float = PING_IDLE_SECONDS,
    autocommit: bool = False,
    bounds: DatabaseBounds = DatabaseBounds(),
) -> Engine:
    """``autocommit``: every statement commits by itself, in one round trip (no BEGIN and no
    COMMIT of psycopg2's sent around it). Its own pool: switching a pooled connection into and
    out of autocommit costs a round trip each way."""
    isolation = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    engine = create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        # An error's text must never carry bound values (metadata, keys): it reaches logs,
        # handler_runs.last_error, /admin/dlq and Sentry.
        hide_parameters=True,
        connect_args={**bounds.connect_args(), "application_name": "payments"},
        **isolation,
    )
    _ping_when_idle(engine, ping_idle_seconds)
    _fail_fast_while_unreachable(engine, bounds.connect_seconds)
    return engine


def _fail_fast_while_unreachable(engine: Engine, connect_seconds: float) -> None:
    """After a connect that waited out its whole timeout (packets vanish: a partition, a dead
    host), the next ones in the following ``connect_seconds`` fail at once instead of waiting
    again: a worker holding many messages gives each back at once rather than one timeout at a
    time, and a web process answers 503 without tying up a slot. A refused connect fails fast
    by itself and is not counted; nor is any that got an answer."""
    timed_out_at: list[float] = []

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        if timed_out_at and time.monotonic() - timed_out_at[0] < connect_seconds:
            ago = time.monotonic() - timed_out_at[0]
            raise dialect.loaded_dbapi.OperationalError(
                f"database unreachable: a connect timed out {ago:.1f} s ago"
            )
        started = time.monotonic()
        try:
            connection = dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError:
            if time.monotonic() - started > connect_seconds / 2:
                timed_out_at[:] = [time.monotonic()]
            raise
        timed_out_at.clear()
        return connection


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """A worker outlives PostgreSQL restarts: a pooled connection that died meanwhile must be
    replaced, not handed to a task. SQLAlchemy's pool_pre_ping checks on every checkout, a
    round trip per transaction (a tenth of an event's, make bench); a connection back in the
    pool within the second was alive then, so only one idle longer is pinged. A restart under
    load fails the one statement that meets it, which invalidates the whole pool, and the task
    retries as on any transient error."""

    @event.listens_for(engine, "checkin")
    def _note_checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        idle_since = record.info.get("checked_in_at")
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError() from exc


def make_session_factory(engine: Engine, cipher: Any = None) -> sessionmaker[Session]:
    """``cipher`` (a PayloadCipher): what the ledger's sessions encrypt handlers' effects with
    (shared.effects.outbox); a session without one refuses to take an effect."""
    info = {"payload_cipher": cipher} if cipher is not None else {}
    return sessionmaker(bind=engine, expire_on_commit=False, info=info)


def execute_alone(
    target: Engine | sessionmaker[Session], statement: Executable, params: Mapping[str, Any]
) -> list[Row[Any]]:
    """One statement as a transaction of its own; the rows it returns, if any. On an autocommit
    engine (make_engine's ``autocommit``) it goes through Core in one round trip; a session
    factory (the fast tests' savepoints) runs it in one of its transactions."""
    if isinstance(target, Engine):
        with target.connect() as conn:
            return _rows(conn.execute(statement, params))
    with transaction(target) as session:
        return _rows(session.execute(statement, params))


def _rows(result: Result[Any]) -> list[Row[Any]]:
    return list(result) if result.returns_rows else []  # type: ignore[attr-defined]


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    with factory() as session, session.begin():
        yield session


# Installed packages name the directories of their own Alembic branches here
# ([project.entry-points."payments.migrations"] shop = "shop.migrations:VERSIONS"): `payments db
# upgrade` runs them with the service's.
MIGRATIONS_ENTRY_POINT_GROUP = "payments.migrations"


def migration_locations() -> list[str]:
    """The service's versions directory, then each installed package's branch."""
    located = [str(MIGRATIONS_DIR / "versions")]
    for entry_point in entry_points(group=MIGRATIONS_ENTRY_POINT_GROUP):
        located.append(str(entry_point.load()))
    return located


def alembic_config(database_url: str) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # One location per line: a path may hold a space.
    config.set_main_option("path_separator", "newline")
    config.set_main_option("version_locations", "\n".join(migration_locations()))
    # ConfigParser interpolation would choke on a '%' in a password.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def create_database_if_absent(database_url: str) -> bool:
    """Create the database named in the URL when it does not exist. Returns True if created."""
    url = make_url(database_url)
    name = url.database
    if not name:
        raise ValueError("DATABASE_URL names no database")
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if exists:
                return False
            quoted = admin.dialect.identifier_preparer.quote(name)
            conn.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    finally:
        admin.dispose()


def upgrade(database_url: str) -> None:
    create_database_if_absent(database_url)
    # Every branch: the service's, and each installed package's.
    command.upgrade(alembic_config(database_url), "heads")
