"""Checks of our own services (PostgreSQL, its schema, Redis, the workers), and the diagnosis."""

from __future__ import annotations

from urllib.parse import urlsplit

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from celery import Celery
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from cli.doctor.findings import Finding, ok, problem, skipped
from cli.doctor.stripe_checks import key_modes, stripe_key, webhook_secret, webhook_subscriptions
from shared.config import Settings
from shared.db import alembic_config, make_engine, make_session_factory
from shared.infra.broker import make_producer
from shared.infra.stripe_gateway import make_stripe_client
from shared.observability.health import WorkerCheck, broker_ready, check_workers


def database(engine: Engine, database_url: str) -> Finding:
    where = make_url(database_url).render_as_string(hide_password=True)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - whatever the driver says is the finding
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return problem(
            "database",
            f"PostgreSQL at {where} cannot be used: {reason}",
            "start PostgreSQL or correct DATABASE_URL; a missing database is created by "
            "`payments db upgrade`",
        )
    return ok("database", f"PostgreSQL at {where} answers")


def migrations(engine: Engine, database_url: str) -> Finding:
    needed = set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    if current == needed:
        return ok("migrations", f"the schema is at the latest revision ({', '.join(needed)})")
    state = f"revision {', '.join(sorted(current))}" if current else "no migrations applied"
    return problem(
        "migrations",
        f"the database has {state}; this code needs {', '.join(sorted(needed))}",
        "run `payments db upgrade` (once per deploy, before web and workers start)",
    )


def _redis_where(redis_url: str) -> str:
    # Never print the password a redis:// URL may carry.
    parts = urlsplit(redis_url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path}"


def broker(producer: Celery, redis_url: str) -> Finding:
    where = _redis_where(redis_url)
    if not broker_ready(producer, timeout=3.0):
        return problem(
            "redis",
            f"Redis at {where} does not answer (or refuses our password)",
            "start Redis or correct REDIS_URL",
        )
    return ok("redis", f"Redis at {where} answers")


def workers(result: WorkerCheck) -> Finding:
    """A ping and a canary through each queue (shared.observability.health.check_workers), as
    `payments worker-check` does: a worker can answer pings yet consume nothing."""
    pinged, consumed = result.pinged, result.queues_consumed
    if not pinged:
        return problem(
            "workers",
            "no worker is consuming: none answered on this Redis",
            "start one with the same REDIS_URL: `celery -A workers.celery_app worker "
            "-Q events,handlers` (the Procfile's `worker`)",
        )
    idle = [queue for queue, seen in consumed.items() if not seen]
    if idle:
        return problem(
            "workers",
            f"{', '.join(pinged)} answered, but nothing consumed the queue(s) {', '.join(idle)}",
            "run workers with -Q events,handlers, and restart them (after a Redis restart a "
            "worker can answer yet consume nothing)",
        )
    return ok("workers", f"{', '.join(pinged)} consumed a canary from every queue")


# --- all of it ----------------------------------------------------------------------------------


def diagnose(
    settings: Settings, needed: list[str], web: str | None, worker_timeout: float
) -> list[Finding]:
    client = make_stripe_client(settings)
    return [
        key_modes(settings),
        stripe_key(client, settings),
        webhook_subscriptions(client, needed),
        webhook_secret(settings, web),
        *_services(settings, worker_timeout),
    ]


def _services(settings: Settings, worker_timeout: float) -> list[Finding]:
    engine = make_engine(settings.database_url, pool_size=1)
    producer = make_producer(settings)
    try:
        db = database(engine, settings.database_url)
        schema = (
            migrations(engine, settings.database_url)
            if db.ok
            else skipped("migrations", "not checked: the database does not answer")
        )
        redis = broker(producer, settings.broker)
        if not (schema.ok and redis.ok):
            work = skipped("workers", "not checked: needs a migrated database and Redis first")
        else:
            sessions = make_session_factory(engine)
            work = workers(check_workers(producer, sessions, worker_timeout))
        return [db, schema, redis, work]
    finally:
        producer.close()
        engine.dispose()
