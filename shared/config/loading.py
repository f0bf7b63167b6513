"""Turning the environment into Settings: every variable read and checked here, grouped by
what it configures, so a wrong value stops the process at start with a one-line error."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from shared.config.readers import (
    _admin_token,
    _api_clients,
    _connected_accounts,
    _database_url,
    _encryption_keys,
    _limit,
    _log_format,
    _lookback,
    _non_negative_int,
    _optional,
    _positive_int,
    _publishable_key,
    _rate_limit,
    _rate_limit_storage,
    _secret_key,
    _token,
    _url,
    _webhook_secrets,
)
from shared.config.settings import (
    DEFAULT_HANDLER_MAX_ATTEMPTS,
    DEFAULT_HANDLER_MAX_PERMANENT_ATTEMPTS,
    DEFAULT_RECONCILE_INTERVAL_SECONDS,
    DEFAULT_RECONCILE_OVERLAP_SECONDS,
    DEFAULT_RETRY_BASE_SECONDS,
    DEFAULT_STRIPE_TIMEOUT_SECONDS,
    DEFAULT_SWEEP_INTERVAL_SECONDS,
    DEFAULT_SWEEP_PENDING_SECONDS,
    DEFAULT_UNDECRYPTABLE_RETRY_SECONDS,
    DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
    DEFAULT_WEBHOOK_TOLERANCE_SECONDS,
    PUBLIC_DEV_VALUES,
    ConfigError,
    Settings,
)

Fields = dict[str, Any]


def refuse_public_dev_values(env: Mapping[str, str]) -> None:
    """Fail closed when a service aimed at real Stripe carries a value from `.env.dev`."""
    if _optional(env, "STRIPE_API_BASE") is not None:
        return  # pointed at the stand-in: the dev values are what it expects
    for name, raw in sorted(env.items()):
        values = {raw.strip(), *(part.strip() for part in raw.split(","))}
        if values & PUBLIC_DEV_VALUES:
            raise ConfigError(
                f"{name} holds a public development value from .env.dev; set a real one "
                "(these are only accepted with STRIPE_API_BASE pointing at the stand-in)"
            )


def prometheus_multiproc_dir(env: Mapping[str, str] | None = None) -> str | None:
    """The one variable prometheus-client also reads itself, at import: the metrics module needs it
    before any setting is loaded, to create the directory (a Procfile runner does not)."""
    return _optional(os.environ if env is None else env, "PROMETHEUS_MULTIPROC_DIR")


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``env`` (the process environment by default)."""
    env = os.environ if env is None else env
    refuse_public_dev_values(env)
    return Settings(
        **_stripe(env),
        **_stores(env),
        **_handler_runs(env),
        **_maintenance(env),
        **_access(env),
        **_observability(env),
    )


def _stripe(env: Mapping[str, str]) -> Fields:
    api_base = _url(env, "STRIPE_API_BASE", ("http", "https"), required=False) or None
    return {
        "stripe_secret_key": _secret_key(env),
        "stripe_publishable_key": _publishable_key(env),
        "stripe_webhook_secrets": _webhook_secrets(env),
        "stripe_api_base": api_base.rstrip("/") if api_base else None,
        "webhook_tolerance_seconds": _positive_int(
            env, "WEBHOOK_TOLERANCE_SECONDS", DEFAULT_WEBHOOK_TOLERANCE_SECONDS
        ),
        "stripe_timeout_seconds": _positive_int(
            env, "STRIPE_TIMEOUT_SECONDS", DEFAULT_STRIPE_TIMEOUT_SECONDS
        ),
        "stripe_js_url": _url(env, "STRIPE_JS_URL", ("http", "https"), required=False)
        or "https://js.stripe.com/v3/",
        "connected_accounts": _connected_accounts(env),
    }


def _stores(env: Mapping[str, str]) -> Fields:
    return {
        "redis_url": _url(env, "REDIS_URL", ("redis", "rediss"), required=True),
        "database_url": _database_url(env),
        "visibility_timeout_seconds": _positive_int(
            env, "BROKER_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT_SECONDS
        ),
        "encryption_keys": _encryption_keys(env),
    }


def _handler_runs(env: Mapping[str, str]) -> Fields:
    return {
        "handler_max_attempts": _positive_int(
            env, "HANDLER_MAX_ATTEMPTS", DEFAULT_HANDLER_MAX_ATTEMPTS
        ),
        "handler_max_permanent_attempts": _positive_int(
            env, "HANDLER_MAX_PERMANENT_ATTEMPTS", DEFAULT_HANDLER_MAX_PERMANENT_ATTEMPTS
        ),
        "retry_base_seconds": _positive_int(env, "RETRY_BASE_SECONDS", DEFAULT_RETRY_BASE_SECONDS),
        "handler_time_limit_seconds": _positive_int(env, "HANDLER_TIME_LIMIT_SECONDS", 300),
        "handler_modules": tuple(
            part.strip() for part in env.get("HANDLER_MODULES", "").split(",") if part.strip()
        ),
        "undecryptable_retry_seconds": _positive_int(
            env, "UNDECRYPTABLE_RETRY_SECONDS", DEFAULT_UNDECRYPTABLE_RETRY_SECONDS
        ),
    }


def _maintenance(env: Mapping[str, str]) -> Fields:
    return {
        "sweep_interval_seconds": _positive_int(
            env, "SWEEP_INTERVAL_SECONDS", DEFAULT_SWEEP_INTERVAL_SECONDS
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
    }


def _access(env: Mapping[str, str]) -> Fields:
    return {
        "admin_token": _admin_token(env),
        "api_clients": _api_clients(env),
        "metrics_token": _token(env, "METRICS_TOKEN"),
        "rate_limit": _rate_limit(env),
        "rate_limit_storage_url": _rate_limit_storage(env),
        "status_rate_limit": _limit(env, "STATUS_RATE_LIMIT", "300 per minute"),
        "admin_rate_limit": _limit(env, "ADMIN_RATE_LIMIT", "60 per minute"),
        "probe_rate_limit": _limit(env, "PROBE_RATE_LIMIT", "120 per minute"),
        "trusted_proxy_hops": _non_negative_int(env, "TRUSTED_PROXY_HOPS", 0),
        "checkout_status_timeout_seconds": _positive_int(
            env, "CHECKOUT_STATUS_TIMEOUT_SECONDS", 60
        ),
    }


def _observability(env: Mapping[str, str]) -> Fields:
    log_level = (env.get("LOG_LEVEL", "") or "INFO").strip().upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR")
    return {
        "sentry_dsn": _optional(env, "SENTRY_DSN"),
        "log_level": log_level,
        "log_format": _log_format(env),
        "prometheus_multiproc_dir": _optional(env, "PROMETHEUS_MULTIPROC_DIR"),
        "worker_metrics_port": _non_negative_int(env, "WORKER_METRICS_PORT", 0) or None,
        "worker_metrics_host": _optional(env, "WORKER_METRICS_HOST") or "127.0.0.1",
    }
