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
# How long a queued body that no configured key decrypts is retried before it is quarantined:
# long enough for a deploy that gave the web process a new key before the workers to finish.
DEFAULT_UNDECRYPTABLE_RETRY_SECONDS = 3600
# The Stripe SDK's own retries of one request (see shared.infra.stripe_gateway).
STRIPE_MAX_NETWORK_RETRIES = 2

# The values `.env.dev` ships with. They are public (they are in this repository), so a service
# that talks to real Stripe refuses to start with any of them: a deployment that forgot one
# variable must fail, not accept events signed with a secret anyone can read.
PUBLIC_DEV_VALUES = frozenset(
    {
        "sk_test_dev_only_not_a_real_key",
        "pk_test_dev_only_not_a_real_key",
        "whsec_dev_only_not_a_real_secret",
        "ZGV2LW9ubHktbm90LWEtcmVhbC1rZXktMzJieXRlcyE=",
        "dev-only-admin-token-not-a-secret",
        "dev-only-metrics-token-not-a-secret",
        "devclient:dev-only-api-client-token-not-a-secret",
    }
)


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
    # API client credentials, name -> bearer token: a caller's idempotency keys are its own.
    api_clients: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # Connected accounts (acct_...) whose events we apply; events of any other account are
    # refused. Empty: only the platform's own events (no `account`).
    connected_accounts: tuple[str, ...] = ()
    # Separate budgets, so a page polling for its result is never starved by creation, and
    # operator and probe endpoints cannot be hammered for free.
    status_rate_limit: str = "300 per minute"
    admin_rate_limit: str = "60 per minute"
    probe_rate_limit: str = "120 per minute"
    # Bearer token for the web process's /metrics; None serves no /metrics on the API port.
    metrics_token: str | None = field(default=None, repr=False)
    undecryptable_retry_seconds: int = DEFAULT_UNDECRYPTABLE_RETRY_SECONDS
    # How long the checkout page waits for the outcome before it tells the customer the
    # payment is still processing (it keeps checking, and never offers to pay again).
    checkout_status_timeout_seconds: int = 60

    @property
    def uses_stripe_stand_in(self) -> bool:
        return self.stripe_api_base is not None

    @property
    def livemode(self) -> bool:
        """Whether the secret key is a live-mode key: events must be of the same mode."""
        return self.stripe_secret_key.startswith(("sk_live_", "rk_live_"))

    @property
    def create_lease_seconds(self) -> int:
        """How long a create-payment request may hold its idempotency key while it waits for
        Stripe: every attempt of the SDK at its timeout, plus a margin. A request that finds
        the key held for longer than this takes it over (its holder died)."""
        return self.stripe_timeout_seconds * (STRIPE_MAX_NETWORK_RETRIES + 1) + 5


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
    from shared.infra.crypto import is_valid_key

    raw = _required(env, "PAYMENTS_ENCRYPTION_KEYS")
    keys = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not keys or not all(is_valid_key(key) for key in keys):
        raise ConfigError(
            "PAYMENTS_ENCRYPTION_KEYS must be one or more Fernet keys (urlsafe base64 of 32 "
            "bytes), comma-separated, newest first; make one with `payments keys generate`"
        )
    return keys


def _admin_token(env: Mapping[str, str]) -> str | None:
    return _token(env, "ADMIN_TOKEN")


def _token(env: Mapping[str, str], name: str) -> str | None:
    value = _optional(env, name)
    if value is not None and len(value) < 24:
        raise ConfigError(f"{name} must be at least 24 characters")
    return value


def _api_clients(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    clients: list[tuple[str, str]] = []
    for part in env.get("API_CLIENT_KEYS", "").split(","):
        if not part.strip():
            continue
        name, _, token = part.strip().partition(":")
        if not name or len(token) < 24 or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(
                "API_CLIENT_KEYS must be name:token pairs separated by commas, each name "
                "letters, digits, - or _ and each token at least 24 characters"
            )
        clients.append((name, token))
    if len({name for name, _ in clients}) != len(clients):
        raise ConfigError("API_CLIENT_KEYS names each client once")
    return tuple(clients)


def _connected_accounts(env: Mapping[str, str]) -> tuple[str, ...]:
    accounts = tuple(
        part.strip() for part in env.get("STRIPE_CONNECTED_ACCOUNTS", "").split(",") if part.strip()
    )
    if not all(account.startswith("acct_") for account in accounts):
        raise ConfigError("STRIPE_CONNECTED_ACCOUNTS must be acct_ ids separated by commas")
    return accounts


def _limit(env: Mapping[str, str], name: str, default: str) -> str:
    from limits import parse_many

    value = (env.get(name, "") or default).strip()
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(
            f"{name} must be like '60 per minute' or '10/second;500/hour', got {value!r}"
        ) from None
    return value


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
        api_clients=_api_clients(env),
        connected_accounts=_connected_accounts(env),
        status_rate_limit=_limit(env, "STATUS_RATE_LIMIT", "300 per minute"),
        admin_rate_limit=_limit(env, "ADMIN_RATE_LIMIT", "60 per minute"),
        probe_rate_limit=_limit(env, "PROBE_RATE_LIMIT", "120 per minute"),
        metrics_token=_token(env, "METRICS_TOKEN"),
        undecryptable_retry_seconds=_positive_int(
            env, "UNDECRYPTABLE_RETRY_SECONDS", DEFAULT_UNDECRYPTABLE_RETRY_SECONDS
        ),
        checkout_status_timeout_seconds=_positive_int(env, "CHECKOUT_STATUS_TIMEOUT_SECONDS", 60),
    )
