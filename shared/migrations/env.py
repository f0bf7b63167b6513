"""Alembic environment: migrations run against the URL our own code puts in the config."""

from alembic import context
from sqlalchemy import create_engine, pool

from shared.db import DatabaseBounds
from shared.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(
        config.get_main_option("sqlalchemy.url") or "",
        poolclass=pool.NullPool,
        # Bounded as every other connection: a database that stops answering ends the migration.
        connect_args=DatabaseBounds().connect_args(),
    )
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            # Two processes migrating at once (web and worker starting together) must not race.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7428873001)")
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
