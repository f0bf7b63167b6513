"""``payments doctor``: check the configuration and everything it points at, and say in plain
words what is wrong and how to fix it.

Each check is a small function returning one ``Finding``. A check that needs another to pass
first (the workers need the database) is ``skipped`` with the reason, never reported as a
second, confusing problem.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
import stripe
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from celery import Celery
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from shared.config import ConfigError, Settings
from shared.observability.health import WorkerCheck, broker_ready, check_workers

OK, PROBLEM, SKIPPED = "ok", "problem", "skipped"

DASHBOARD_KEYS = "Stripe Dashboard > Developers > API keys"


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    message: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def ok(check: str, message: str) -> Finding:
    return Finding(check, OK, message)


def problem(check: str, message: str, fix: str) -> Finding:
    return Finding(check, PROBLEM, message, fix)


def skipped(check: str, message: str, fix: str = "") -> Finding:
    return Finding(check, SKIPPED, message, fix)


# --- configuration ------------------------------------------------------------------------------

CONFIG_FIXES = {
    "STRIPE_SECRET_KEY": f"copy the secret key (sk_test_... in test mode) from {DASHBOARD_KEYS}",
    "STRIPE_PUBLISHABLE_KEY": f"copy the publishable key (pk_test_...) from {DASHBOARD_KEYS}",
    "STRIPE_WEBHOOK_SECRET": "use the whsec_... that `stripe listen` prints, or the signing "
    "secret `payments webhook register` printed",
    "PAYMENTS_ENCRYPTION_KEYS": "make one with `payments keys generate`",
}


def configuration(load: Callable[[], Settings]) -> tuple[Settings | None, Finding]:
    """Load the settings as every process does; a refusal is the first thing to fix."""
    try:
        settings = load()
    except ConfigError as exc:
        message = str(exc)
        fix = next(
            (hint for name, hint in CONFIG_FIXES.items() if message.startswith(name)),
            "set it in the environment (README, Configuration lists every variable)",
        )
        return None, problem("configuration", message, fix)
    return settings, ok("configuration", "every variable is present and well formed")


def _mode(key: str) -> str:
    # sk_test_..., rk_live_..., pk_test_...: the second part is the mode.
    parts = key.split("_")
    return parts[1] if len(parts) > 2 and parts[1] in ("test", "live") else "unknown"


def key_modes(settings: Settings) -> Finding:
    server_mode, browser_mode = (
        _mode(settings.stripe_secret_key),
        _mode(settings.stripe_publishable_key),
    )
    if server_mode != browser_mode:
        return problem(
            "key modes",
            f"STRIPE_SECRET_KEY is a {server_mode} mode key but STRIPE_PUBLISHABLE_KEY a "
            f"{browser_mode} mode key: browsers would pay in the other mode than our server sees",
            f"take both keys from the same mode in {DASHBOARD_KEYS} (the Test mode switch)",
        )
    if server_mode == "live" and settings.uses_stripe_stand_in:
        return problem(
            "key modes",
            f"a live key is being sent to the local stand-in at {settings.stripe_api_base}",
            "use test keys (sk_test_..., pk_test_...) with the stand-in; live keys belong to a "
            "production deployment only",
        )
    kind = "restricted" if settings.stripe_secret_key.startswith("rk_") else "secret"
    return ok("key modes", f"a {kind} key and a publishable key, both {server_mode} mode")


# --- Stripe -------------------------------------------------------------------------------------


def stripe_key(client: stripe.StripeClient, settings: Settings) -> Finding:
    """One harmless read tells whether Stripe takes the key at all."""
    where = settings.stripe_api_base or "Stripe"
    try:
        client.v1.payment_intents.list(params={"limit": 1})
    except stripe.AuthenticationError:
        return problem(
            "stripe key",
            f"{where} refused STRIPE_SECRET_KEY: mistyped, revoked, or of another account",
            f"copy the key again from {DASHBOARD_KEYS}",
        )
    except stripe.PermissionError:
        return problem(
            "stripe key",
            "the restricted key may not read PaymentIntents",
            "give the key PaymentIntents: write and Events: read (Dashboard > API keys)",
        )
    except stripe.APIConnectionError:
        return problem(
            "stripe key",
            f"{where} does not answer",
            "check the network; in dev start the stand-in (Procfile `stripe`) or unset "
            "STRIPE_API_BASE to use real Stripe",
        )
    except stripe.StripeError as exc:
        return problem(
            "stripe key",
            f"{where} answered HTTP {exc.http_status} to a PaymentIntents list",
            "check https://status.stripe.com, or the stand-in's log in dev",
        )
    return ok("stripe key", f"{where} accepts STRIPE_SECRET_KEY")


def _endpoints(client: stripe.StripeClient) -> list[dict[str, object]] | Finding:
    try:
        listed = client.v1.webhook_endpoints.list(params={"limit": 100})
    except stripe.PermissionError:
        return skipped(
            "webhook subscriptions",
            "the key may not read webhook endpoints, so their subscriptions were not checked",
            "give the restricted key Webhook Endpoints: read to check them",
        )
    except stripe.StripeError as exc:
        if exc.http_status == 404:
            # localstripe has no webhook endpoints API: `webhook register` configures it.
            return skipped(
                "webhook subscriptions",
                "this Stripe API (the stand-in) has no webhook endpoints to list; "
                "`payments webhook register` subscribes it to what our handlers need",
            )
        return skipped("webhook subscriptions", "not checked: Stripe did not answer the key")
    return [endpoint.to_dict() for endpoint in listed.data]


def webhook_subscriptions(client: stripe.StripeClient, needed: list[str]) -> Finding:
    """Every enabled endpoint at Stripe must send every event type a handler of ours needs."""
    endpoints = _endpoints(client)
    if isinstance(endpoints, Finding):
        return endpoints
    enabled = [e for e in endpoints if e.get("status") == "enabled"]
    if not enabled:
        return skipped(
            "webhook subscriptions",
            "no enabled webhook endpoint at Stripe: fine while `stripe listen` forwards events "
            "to your laptop, but a deployment receives nothing",
            "for a public URL run `payments webhook register --url https://your.host/webhook`",
        )
    gaps = _subscription_gaps(enabled, needed)
    if gaps:
        return problem(
            "webhook subscriptions",
            "; ".join(f"{url} is not subscribed to {', '.join(types)}" for url, types in gaps),
            "add those events to the endpoint (Dashboard > Developers > Webhooks > the "
            "endpoint > Update details), or register it again with `payments webhook register`",
        )
    return ok(
        "webhook subscriptions",
        f"{len(enabled)} enabled endpoint(s), each subscribed to all {len(needed)} event "
        "types our handlers need",
    )


def _subscription_gaps(
    endpoints: list[dict[str, object]], needed: list[str]
) -> list[tuple[str, list[str]]]:
    gaps = []
    for endpoint in endpoints:
        subscribed = endpoint.get("enabled_events") or []
        assert isinstance(subscribed, list)
        if "*" in subscribed:
            continue
        missing = [t for t in needed if t not in subscribed]
        if missing:
            gaps.append((str(endpoint.get("url")), missing))
    return gaps


# A body our receiver checks only after the signature, and refuses as "not an event": a correct
# signature is answered invalid_event, a wrong one signature_invalid, and nothing is ever queued.
PROBE_BODY = json.dumps({"object": "payments.doctor_probe"})


def webhook_secret(settings: Settings, web: str | None) -> Finding:
    """Whether our web process verifies signatures made with each configured secret.

    This proves our side only. Stripe never shows an endpoint's secret after creating it, so no
    call can compare it with STRIPE_WEBHOOK_SECRET; a mismatch shows as failed deliveries in the
    Dashboard (or as 400s in `stripe listen`'s output, whose secret is its own, not an
    endpoint's).
    """
    if not web:
        return skipped(
            "webhook secret", "not checked", "give --web http://127.0.0.1:8000 (our web process)"
        )
    url = web.rstrip("/") + "/webhook"
    for index, secret in enumerate(settings.stripe_webhook_secrets):
        header = stripe.WebhookSignature.generate_signature_header(PROBE_BODY, secret)
        try:
            answer = requests.post(
                url, data=PROBE_BODY, headers={"Stripe-Signature": header}, timeout=10
            )
        except requests.RequestException:
            return problem(
                "webhook secret",
                f"nothing answers at {url}",
                "start the web process (Procfile `web`), or pass its address with --web",
            )
        code = _error_code(answer)
        if code != "invalid_event":
            return problem(
                "webhook secret",
                f"{url} does not accept signatures made with STRIPE_WEBHOOK_SECRET "
                f"(secret #{index + 1}; it answered {answer.status_code} {code})",
                "give web the same STRIPE_WEBHOOK_SECRET as this environment and restart it",
            )
    return ok(
        "webhook secret",
        f"{url} verifies signatures made with the configured secret(s). Whether Stripe signs "
        "with the same secret only shows in deliveries: see the endpoint's attempts in the "
        "Dashboard, or `stripe listen`'s output",
    )


def _error_code(answer: requests.Response) -> str:
    try:
        return str(answer.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "no error code"


# --- our own services ---------------------------------------------------------------------------


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
    from shared.db import alembic_config

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
    from shared.infra.stripe_gateway import make_stripe_client

    client = make_stripe_client(settings)
    return [
        key_modes(settings),
        stripe_key(client, settings),
        webhook_subscriptions(client, needed),
        webhook_secret(settings, web),
        *_services(settings, worker_timeout),
    ]


def _services(settings: Settings, worker_timeout: float) -> list[Finding]:
    from shared.db import make_engine, make_session_factory
    from shared.infra.broker import make_producer

    engine = make_engine(settings.database_url, pool_size=1)
    producer = make_producer(settings)
    try:
        db = database(engine, settings.database_url)
        schema = (
            migrations(engine, settings.database_url)
            if db.ok
            else skipped("migrations", "not checked: the database does not answer")
        )
        redis = broker(producer, settings.redis_url)
        if not (schema.ok and redis.ok):
            work = skipped("workers", "not checked: needs a migrated database and Redis first")
        else:
            sessions = make_session_factory(engine)
            work = workers(check_workers(producer, sessions, worker_timeout))
        return [db, schema, redis, work]
    finally:
        producer.close()
        engine.dispose()


def render(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"{finding.status.upper():8} {finding.check}: {finding.message}")
        if finding.fix:
            lines.append(f"{'':8} fix: {finding.fix}")
    problems = sum(f.status == PROBLEM for f in findings)
    lines.append("")
    lines.append(f"{problems} problem(s)" if problems else "no problems found")
    return "\n".join(lines)
