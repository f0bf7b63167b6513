"""Settings, read from the environment in one place.

Nothing else in the project reads ``os.environ``: the web process, the workers and the CLI all call
``load_settings()`` and pass the result along. A missing or malformed required value raises
``ConfigError`` whose message is one line naming the variable; entry points print it and exit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A required setting is missing or malformed. The message names the variable."""


# Defaults chosen for production safety; each can be overridden from the environment.
DEFAULT_WEBHOOK_TOLERANCE_SECONDS = 300
DEFAULT_VISIBILITY_TIMEOUT_SECONDS = 3600
DEFAULT_HANDLER_MAX_ATTEMPTS = 8
DEFAULT_STRIPE_TIMEOUT_SECONDS = 20
DEFAULT_HANDLER_MAX_PERMANENT_ATTEMPTS = 3
DEFAULT_RETRY_BASE_SECONDS = 2
DEFAULT_SWEEP_INTERVAL_SECONDS = 60
DEFAULT_SWEEP_PENDING_SECONDS = 300
DEFAULT_RECONCILE_INTERVAL_SECONDS = 300
DEFAULT_RECONCILE_OVERLAP_SECONDS = 600
DEFAULT_RECONCILE_LOOKBACK_SECONDS = 3 * 24 * 3600


@dataclass(frozen=True)
class Settings:
    stripe_secret_key: str = field(repr=False)
    stripe_publishable_key: str
    # Several secrets are valid at once while one is being rolled.
    stripe_webhook_secrets: tuple[str, ...] = field(repr=False)
    redis_url: str
    database_url: str
    stripe_api_base: str | None = None
    sentry_dsn: str | None = field(default=None, repr=False)
    webhook_tolerance_seconds: int = DEFAULT_WEBHOOK_TOLERANCE_SECONDS
    visibility_timeout_seconds: int = DEFAULT_VISIBILITY_TIMEOUT_SECONDS
    handler_max_attempts: int = DEFAULT_HANDLER_MAX_ATTEMPTS
    stripe_timeout_seconds: int = DEFAULT_STRIPE_TIMEOUT_SECONDS
    log_level: str = "INFO"
    # Attempts for failures that retrying cannot fix (a handler bug); transient ones get
    # handler_max_attempts.
    handler_max_permanent_attempts: int = DEFAULT_HANDLER_MAX_PERMANENT_ATTEMPTS
    retry_base_seconds: int = DEFAULT_RETRY_BASE_SECONDS
    # The longest one handler attempt may run before Celery kills it (and it counts as failed).
    handler_time_limit_seconds: int = 300
    sweep_interval_seconds: int = DEFAULT_SWEEP_INTERVAL_SECONDS
    sweep_pending_seconds: int = DEFAULT_SWEEP_PENDING_SECONDS
    reconcile_interval_seconds: int = DEFAULT_RECONCILE_INTERVAL_SECONDS
    reconcile_overlap_seconds: int = DEFAULT_RECONCILE_OVERLAP_SECONDS
    reconcile_lookback_seconds: int = DEFAULT_RECONCILE_LOOKBACK_SECONDS
    # Bearer token for /admin/; None turns the admin API off.
    admin_token: str | None = field(default=None, repr=False)
    # Extra modules whose handlers the workers load (our own are always loaded).
    handler_modules: tuple[str, ...] = ()
    # Per client address on /api/*, in flask-limiter's notation ("60 per minute").
    rate_limit: str = "60 per minute"
    rate_limit_storage_url: str | None = None
    # How many proxies in front of us set X-Forwarded-For/-Proto; 0 trusts none.
    trusted_proxy_hops: int = 0
    # prometheus-client's multiprocess directory (it reads the variable itself, at import).
    prometheus_multiproc_dir: str | None = None
    # Port for the worker's own /metrics; None serves none. Loopback unless told otherwise.
    worker_metrics_port: int | None = None
    worker_metrics_host: str = "127.0.0.1"
    # Where the checkout page loads Stripe.js from (tests point it at a test double).
    stripe_js_url: str = "https://js.stripe.com/v3/"
    # "json" (one object a line, for production) or "text" (for people).
    log_format: str = "json"
    # Fernet keys for stored event payloads, newest first (it encrypts; all decrypt).
    encryption_keys: tuple[str, ...] = field(default=(), repr=False)

    @property
    def uses_stripe_stand_in(self) -> bool:
        return self.stripe_api_base is not None


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}")
    return value


def _secret_key(env: Mapping[str, str]) -> str:
    value = _required(env, "STRIPE_SECRET_KEY")
    if value.startswith("pk_"):
        raise ConfigError(
            "STRIPE_SECRET_KEY holds a publishable key (pk_...); it needs a secret (sk_...) "
            "or restricted (rk_...) key"
        )
    if not value.startswith(("sk_", "rk_")):
        raise ConfigError("STRIPE_SECRET_KEY must start with sk_ or rk_")
    return value


def _publishable_key(env: Mapping[str, str]) -> str:
    value = _required(env, "STRIPE_PUBLISHABLE_KEY")
    if not value.startswith("pk_"):
        raise ConfigError("STRIPE_PUBLISHABLE_KEY must start with pk_")
    return value


def _webhook_secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = _required(env, "STRIPE_WEBHOOK_SECRET")
    secrets = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not secrets or not all(s.startswith("whsec_") for s in secrets):
        raise ConfigError(
            "STRIPE_WEBHOOK_SECRET must be one whsec_ secret, or several separated by commas"
        )
    return secrets


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], *, required: bool) -> str:
    value = _required(env, name) if required else _optional(env, name)
    if value is None:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(
            f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}"
        )
    return value


def _database_url(env: Mapping[str, str]) -> str:
    value = _url(
        env, "DATABASE_URL", ("postgres", "postgresql", "postgresql+psycopg2"), required=True
    )
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; we ship psycopg2. Heroku-style
    # postgres:// is common in the wild and SQLAlchemy does not know it at all.
    scheme, rest = value.split("://", 1)
    if scheme in ("postgres", "postgresql"):
        value = "postgresql+psycopg2://" + rest
    return value


# Stripe's Events API only returns the last 30 days.
STRIPE_EVENTS_RETENTION_SECONDS = 30 * 24 * 3600


def _lookback(env: Mapping[str, str]) -> int:
    value = _positive_int(env, "RECONCILE_LOOKBACK_SECONDS", DEFAULT_RECONCILE_LOOKBACK_SECONDS)
    if value > STRIPE_EVENTS_RETENTION_SECONDS:
        raise ConfigError("RECONCILE_LOOKBACK_SECONDS must be at most 30 days (2592000)")
    return value


def _non_negative_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ConfigError(f"{name} must be a whole number, got {raw!r}")
    return int(raw)


def _log_format(env: Mapping[str, str]) -> str:
    value = (env.get("LOG_FORMAT", "") or "json").strip().lower()
    if value not in ("json", "text"):
        raise ConfigError("LOG_FORMAT must be json or text")
    return value


def _rate_limit_storage(env: Mapping[str, str]) -> str | None:
    # memory:// keeps counts per process: for a single-process dev server only.
    if env.get("RATE_LIMIT_STORAGE_URL", "").strip() == "memory://":
        return "memory://"
    return _url(env, "RATE_LIMIT_STORAGE_URL", ("redis", "rediss"), required=False) or None


def _rate_limit(env: Mapping[str, str]) -> str:
    from limits import parse_many

    value = (env.get("RATE_LIMIT", "") or "60 per minute").strip()
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(
            f"RATE_LIMIT must be like '60 per minute' or '10/second;500/hour', got {value!r}"
        ) from None
    return value


def _encryption_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    from shared.crypto import is_valid_key

    raw = _required(env, "PAYMENTS_ENCRYPTION_KEYS")
    keys = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not keys or not all(is_valid_key(key) for key in keys):
        raise ConfigError(
            "PAYMENTS_ENCRYPTION_KEYS must be one or more Fernet keys (urlsafe base64 of 32 "
            "bytes), comma-separated, newest first; make one with `payments keys generate`"
        )
    return keys


def _admin_token(env: Mapping[str, str]) -> str | None:
    value = _optional(env, "ADMIN_TOKEN")
    if value is not None and len(value) < 24:
        raise ConfigError("ADMIN_TOKEN must be at least 24 characters")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from ``env`` (the process environment by default)."""
    env = os.environ if env is None else env
    api_base = _url(env, "STRIPE_API_BASE", ("http", "https"), required=False) or None
    log_level = (env.get("LOG_LEVEL", "") or "INFO").strip().upper()
    if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR")
    return Settings(
        stripe_secret_key=_secret_key(env),
        stripe_publishable_key=_publishable_key(env),
        stripe_webhook_secrets=_webhook_secrets(env),
        stripe_api_base=api_base.rstrip("/") if api_base else None,
        redis_url=_url(env, "REDIS_URL", ("redis", "rediss"), required=True),
        database_url=_database_url(env),
        sentry_dsn=_optional(env, "SENTRY_DSN"),
        webhook_tolerance_seconds=_positive_int(
            env, "WEBHOOK_TOLERANCE_SECONDS", DEFAULT_WEBHOOK_TOLERANCE_SECONDS
        ),
        visibility_timeout_seconds=_positive_int(
            env, "BROKER_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT_SECONDS
        ),
        handler_max_attempts=_positive_int(
            env, "HANDLER_MAX_ATTEMPTS", DEFAULT_HANDLER_MAX_ATTEMPTS
        ),
        stripe_timeout_seconds=_positive_int(
            env, "STRIPE_TIMEOUT_SECONDS", DEFAULT_STRIPE_TIMEOUT_SECONDS
        ),
        log_level=log_level,
        handler_max_permanent_attempts=_positive_int(
            env, "HANDLER_MAX_PERMANENT_ATTEMPTS", DEFAULT_HANDLER_MAX_PERMANENT_ATTEMPTS
        ),
        retry_base_seconds=_positive_int(env, "RETRY_BASE_SECONDS", DEFAULT_RETRY_BASE_SECONDS),
        handler_time_limit_seconds=_positive_int(env, "HANDLER_TIME_LIMIT_SECONDS", 300),
        sweep_interval_seconds=_positive_int(
            env, "SWEEP_INTERVAL_SECONDS", DEFAULT_SWEEP_INTERVAL_SECONDS
        ),
        sweep_pending_seconds=_positive_int(
            env, "SWEEP_PENDING_SECONDS", DEFAULT_SWEEP_PENDING_SECONDS
        ),
        reconcile_interval_seconds=_positive_int(
            env, "RECONCILE_INTERVAL_SECONDS", DEFAULT_RECONCILE_INTERVAL_SECONDS
        ),
        reconcile_overlap_seconds=_positive_int(
            env, "RECONCILE_OVERLAP_SECONDS", DEFAULT_RECONCILE_OVERLAP_SECONDS
        ),
        reconcile_lookback_seconds=_lookback(env),
        admin_token=_admin_token(env),
        encryption_keys=_encryption_keys(env),
        rate_limit=_rate_limit(env),
        rate_limit_storage_url=_rate_limit_storage(env),
        trusted_proxy_hops=_non_negative_int(env, "TRUSTED_PROXY_HOPS", 0),
        prometheus_multiproc_dir=_optional(env, "PROMETHEUS_MULTIPROC_DIR"),
        worker_metrics_port=_non_negative_int(env, "WORKER_METRICS_PORT", 0) or None,
        worker_metrics_host=_optional(env, "WORKER_METRICS_HOST") or "127.0.0.1",
        log_format=_log_format(env),
        stripe_js_url=_url(env, "STRIPE_JS_URL", ("http", "https"), required=False)
        or "https://js.stripe.com/v3/",
        handler_modules=tuple(
            part.strip() for part in env.get("HANDLER_MODULES", "").split(",") if part.strip()
        ),
    )
