"""Turning the environment into Settings: every variable read and checked here, grouped by
what it configures, so a wrong value stops the process at start with a one-line error."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from shared.config.readers import (
    _api_clients,
    _api_version,
    _connected_accounts,
    _database_url,
    _encryption_keys,
    _flag,
    _handler_queues,
    _limit,
    _log_format,
    _log_level,
    _lookback,
    _non_negative_int,
    _operators,
    _optional,
    _positive_int,
    _publishable_key,
    _rate_limit,
    _rate_limit_storage,
    _secret_key,
    _token,
    _url,
    _webhook_endpoint_names,
    _webhook_secrets,
)
from shared.config.settings import (
    BROKER_SCHEMES,
    DEFAULT_EVENT_RETENTION_DAYS,
    DEFAULT_HANDLER_MAX_ATTEMPTS,
    DEFAULT_HANDLER_MAX_PERMANENT_ATTEMPTS,
    DEFAULT_INGEST_BATCH_SIZE,
    DEFAULT_RECONCILE_INTERVAL_SECONDS,
    DEFAULT_RECONCILE_OVERLAP_SECONDS,
    DEFAULT_RETRY_BASE_SECONDS,
    DEFAULT_STRIPE_TIMEOUT_SECONDS,
    DEFAULT_SWEEP_INTERVAL_SECONDS,
    DEFAULT_SWEEP_PENDING_SECONDS,
    DEFAULT_UNDECRYPTABLE_RETRY_SECONDS,
    DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
    DEFAULT_WEBHOOK_TOLERANCE_SECONDS,
    LOOPBACK_HOSTS,
    PUBLIC_DEV_VALUES,
    ConfigError,
    Settings,
)

Fields = dict[str, Any]


def refuse_public_dev_values(env: Mapping[str, str]) -> None:
    """Fail closed when a service aimed at real Stripe, or holding a live key, carries a value
    from `.env.dev`."""
    if _optional(env, "STRIPE_API_BASE") is not None and not _holds_live_key(env):
        return  # pointed at the stand-in with test keys: the dev values are what it expects
    for name, raw in sorted(env.items()):
        values = {raw.strip(), *(part.strip() for part in raw.split(","))}
        if values & PUBLIC_DEV_VALUES:
            raise ConfigError(
                f"{name} holds a public development value from .env.dev; set a real one "
                "(these are only accepted with test keys and STRIPE_API_BASE pointing at the "
                "stand-in)"
            )


def _checkout_demo(env: Mapping[str, str]) -> bool:
    """The demo page lets a browser choose what it pays: only ever against the stand-in."""
    demo = _flag(env, "CHECKOUT_DEMO")
    if demo and (_optional(env, "STRIPE_API_BASE") is None or _holds_live_key(env)):
        raise ConfigError(
            "CHECKOUT_DEMO lets any browser choose the amount it pays; it is only accepted with "
            "test keys and STRIPE_API_BASE pointing at the stand-in"
        )
    return demo


def _holds_live_key(env: Mapping[str, str]) -> bool:
    """A live key moves real money wherever STRIPE_API_BASE points, so it is never dev."""
    keys = (_optional(env, name) or "" for name in ("STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY"))
    return any(key.startswith(("sk_live_", "rk_live_", "pk_live_")) for key in keys)


def prometheus_multiproc_dir(env: Mapping[str, str] | None = None) -> str | None:
    """The one variable prometheus-client also reads itself, at import: the metrics module needs it
    before any setting is loaded, to create the directory (a Procfile runner does not)."""
    return _optional(os.environ if env is None else env, "PROMETHEUS_MULTIPROC_DIR")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``env`` (the process environment by default)."""
    env = os.environ if env is None else env
    refuse_public_dev_values(env)
    # The variables are checked in the order they always were (the stand-in and the log level
    # first, then each area in turn), so that of several wrong values the same one is named.
    api_base = _url(env, "STRIPE_API_BASE", ("http", "https"), required=False) or None
    log_level = _log_level(env)
    return Settings(
        stripe_api_base=api_base.rstrip("/") if api_base else None,
        log_level=log_level,
        **_stripe_keys(env),
        **_stores(env),
        **_delivery(env),
        **_maintenance(env),
        **_effects(env),
        **_protection(env),
        **_observability(env),
        **_callers(env),
        **_waits(env),
    )


def _stripe_keys(env: Mapping[str, str]) -> Fields:
    return {
        "stripe_secret_key": _secret_key(env),
        "stripe_publishable_key": _publishable_key(env),
        "stripe_webhook_secrets": _webhook_secrets(env),
        "stripe_webhook_endpoints": _webhook_endpoint_names(env),
        "stripe_api_version": _api_version(env),
    }


def _stores(env: Mapping[str, str]) -> Fields:
    return {
        "redis_url": _url(env, "REDIS_URL", ("redis", "rediss"), required=True),
        **_broker(env),
        "database_url": _database_url(env),
    }


def _broker(env: Mapping[str, str]) -> Fields:
    url = _url(env, "BROKER_URL", BROKER_SCHEMES, required=False) or None
    master = _optional(env, "BROKER_SENTINEL_MASTER")
    on_sentinel = url is not None and url.startswith("sentinel://")
    if on_sentinel and master is None:
        raise ConfigError("BROKER_SENTINEL_MASTER is not set: a sentinel:// BROKER_URL needs it")
    if master is not None and not on_sentinel:
        raise ConfigError("BROKER_SENTINEL_MASTER is set but BROKER_URL is not sentinel://")
    return {"broker_url": url, "broker_sentinel_master": master}


def _delivery(env: Mapping[str, str]) -> Fields:
    """How late a webhook may arrive, how long a queued event is hidden, how long Stripe may
    take, and how often and how long a handler runs; and which extra handlers there are."""
    return {
        "webhook_tolerance_seconds": _positive_int(
            env, "WEBHOOK_TOLERANCE_SECONDS", DEFAULT_WEBHOOK_TOLERANCE_SECONDS
        ),
        "visibility_timeout_seconds": _positive_int(
            env, "BROKER_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT_SECONDS
        ),
        "handler_max_attempts": _positive_int(
            env, "HANDLER_MAX_ATTEMPTS", DEFAULT_HANDLER_MAX_ATTEMPTS
        ),
        "ingest_batch_size": _positive_int(env, "INGEST_BATCH_SIZE", DEFAULT_INGEST_BATCH_SIZE),
        "stripe_timeout_seconds": _positive_int(
            env, "STRIPE_TIMEOUT_SECONDS", DEFAULT_STRIPE_TIMEOUT_SECONDS
        ),
        "handler_max_permanent_attempts": _positive_int(
            env, "HANDLER_MAX_PERMANENT_ATTEMPTS", DEFAULT_HANDLER_MAX_PERMANENT_ATTEMPTS
        ),
        "retry_base_seconds": _positive_int(env, "RETRY_BASE_SECONDS", DEFAULT_RETRY_BASE_SECONDS),
        "handler_time_limit_seconds": _positive_int(env, "HANDLER_TIME_LIMIT_SECONDS", 300),
        "handler_modules": tuple(
            part.strip() for part in env.get("HANDLER_MODULES", "").split(",") if part.strip()
        ),
        "handler_queues": _handler_queues(env),
    }


def _maintenance(env: Mapping[str, str]) -> Fields:
    """The sweep of stuck runs and the reconciliation against Stripe's Events API."""
    return {
        "sweep_interval_seconds": _positive_int(
            env, "SWEEP_INTERVAL_SECONDS", DEFAULT_SWEEP_INTERVAL_SECONDS
        ),
        "broker_unreachable_exit_seconds": _non_negative_int(
            env, "BROKER_UNREACHABLE_EXIT_SECONDS", 60
        ),
        "sweep_pending_seconds": _positive_int(
            env, "SWEEP_PENDING_SECONDS", DEFAULT_SWEEP_PENDING_SECONDS
        ),
        "reconcile_interval_seconds": _positive_int(
            env, "RECONCILE_INTERVAL_SECONDS", DEFAULT_RECONCILE_INTERVAL_SECONDS
        ),
        "reconcile_overlap_seconds": _positive_int(
            env, "RECONCILE_OVERLAP_SECONDS", DEFAULT_RECONCILE_OVERLAP_SECONDS
        ),
        "reconcile_lookback_seconds": _lookback(env),
        "event_retention_days": _retention_days(env),
    }


def _effects(env: Mapping[str, str]) -> Fields:
    """The relay of handlers' side effects and what the built-in kinds reach."""
    return {
        "effects_relay_interval_seconds": _positive_int(env, "EFFECTS_RELAY_INTERVAL_SECONDS", 2),
        "effects_timeout_seconds": _positive_int(env, "EFFECTS_TIMEOUT_SECONDS", 10),
        "smtp_host": env.get("SMTP_HOST", "localhost"),
        "smtp_port": _positive_int(env, "SMTP_PORT", 25),
        "effects_email_from": env.get("EFFECTS_EMAIL_FROM", "payments@localhost"),
    }


def _retention_days(env: Mapping[str, str]) -> int:
    days = _non_negative_int(env, "EVENT_RETENTION_DAYS", DEFAULT_EVENT_RETENTION_DAYS)
    # Stripe lists events for 30 days: one forgotten sooner would be applied again if it came
    # back (shared.ledger.retention). The reconciler's own lookback is checked at prune time.
    if 0 < days <= 30:
        raise ConfigError("EVENT_RETENTION_DAYS must be 0 (keep for ever) or more than 30")
    return days


def _protection(env: Mapping[str, str]) -> Fields:
    """The operator's token, the keys of stored payloads, the API's rate limit and its
    storage, and how many proxies' forwarded headers we believe."""
    return {
        "operators": _operators(env),
        "encryption_keys": _encryption_keys(env),
        "rate_limit": _rate_limit(env),
        "rate_limit_storage_url": _rate_limit_storage(env),
        "trusted_proxy_hops": _non_negative_int(env, "TRUSTED_PROXY_HOPS", 0),
    }


def _observability(env: Mapping[str, str]) -> Fields:
    host = _optional(env, "WORKER_METRICS_HOST") or "127.0.0.1"
    port = _non_negative_int(env, "WORKER_METRICS_PORT", 0) or None
    if port and host not in LOOPBACK_HOSTS and not _token(env, "METRICS_TOKEN"):
        raise ConfigError(
            "WORKER_METRICS_HOST other than loopback serves the worker's metrics to other "
            "hosts: set METRICS_TOKEN, which they then require"
        )
    return {
        "sentry_dsn": _optional(env, "SENTRY_DSN"),
        "prometheus_multiproc_dir": _optional(env, "PROMETHEUS_MULTIPROC_DIR"),
        "worker_metrics_port": port,
        "worker_metrics_host": host,
        "log_format": _log_format(env),
    }


def _callers(env: Mapping[str, str]) -> Fields:
    """What callers meet: the checkout page's Stripe.js, the API's clients, the connected
    accounts whose events we apply, each endpoint's budget and the token for /metrics."""
    # The page runs this script beside the card fields: fetched over http, anyone on the path
    # could swap it. Only the stand-in (dev, STRIPE_API_BASE set) serves its double over http.
    js_schemes = ("http", "https") if _optional(env, "STRIPE_API_BASE") else ("https",)
    return {
        "stripe_js_url": _url(env, "STRIPE_JS_URL", js_schemes, required=False)
        or "https://js.stripe.com/v3/",
        "api_clients": _api_clients(env),
        "checkout_demo": _checkout_demo(env),
        "connected_accounts": _connected_accounts(env),
        "status_rate_limit": _limit(env, "STATUS_RATE_LIMIT", "300 per minute"),
        "admin_rate_limit": _limit(env, "ADMIN_RATE_LIMIT", "60 per minute"),
        "probe_rate_limit": _limit(env, "PROBE_RATE_LIMIT", "120 per minute"),
        "metrics_token": _token(env, "METRICS_TOKEN"),
    }


def _waits(env: Mapping[str, str]) -> Fields:
    """How long an event no key decrypts is retried, how long the checkout page waits, and how
    many failed attempts a checkout session is allowed."""
    return {
        "undecryptable_retry_seconds": _positive_int(
            env, "UNDECRYPTABLE_RETRY_SECONDS", DEFAULT_UNDECRYPTABLE_RETRY_SECONDS
        ),
        "checkout_status_timeout_seconds": _positive_int(
            env, "CHECKOUT_STATUS_TIMEOUT_SECONDS", 60
        ),
        "checkout_max_failed_attempts": _positive_int(env, "CHECKOUT_MAX_FAILED_ATTEMPTS", 5),
    }


# Celery reads its broker from these before its configuration, and its command line's
# --broker (or BROKER_URL) sets the first of them.
CELERY_BROKER_VARIABLES = ("CELERY_BROKER_URL", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL")


def pin_broker(broker_url: str, environ: MutableMapping[str, str] = os.environ) -> None:
    """Make ``broker_url`` the only broker Celery can use in this process.

    A broker variable of Celery's own that our settings never read would have the worker,
    beat and Flower consume from one broker while the web process publishes to another:
    every webhook answered 200, none processed. One that names another broker is refused
    (ConfigError); one that agrees is dropped, so nothing but the settings decides."""
    for name in CELERY_BROKER_VARIABLES:
        value = environ.get(name)
        if value is None:
            continue
        if value != broker_url:
            raise ConfigError(
                f"{name} names another broker than BROKER_URL (or REDIS_URL, when BROKER_URL "
                f"is unset): every process takes its broker from BROKER_URL alone; unset {name}"
            )
        del environ[name]
