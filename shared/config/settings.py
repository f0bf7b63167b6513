"""The settings every process runs with, their defaults, and the one configuration error."""

from __future__ import annotations

from dataclasses import dataclass, field

import stripe


class ConfigError(Exception):
    """A required setting is missing or malformed. The message names the variable."""


# Defaults chosen for production safety; each can be overridden from the environment.
DEFAULT_WEBHOOK_TOLERANCE_SECONDS = 300
# Redis, Redis behind Sentinel (the sentinels separated by ';'), or RabbitMQ (one node, or a
# cluster's nodes separated by ';').
BROKER_SCHEMES = ("redis", "rediss", "sentinel", "amqp", "amqps")
DEFAULT_VISIBILITY_TIMEOUT_SECONDS = 3600
DEFAULT_HANDLER_MAX_ATTEMPTS = 8
DEFAULT_INGEST_BATCH_SIZE = 50
DEFAULT_STRIPE_TIMEOUT_SECONDS = 20
# The API version every call asks for unless STRIPE_API_VERSION says otherwise: the one the
# locked SDK is written for (its types and parsing follow it).
DEFAULT_STRIPE_API_VERSION: str = stripe.api_version
DEFAULT_HANDLER_MAX_PERMANENT_ATTEMPTS = 3
DEFAULT_RETRY_BASE_SECONDS = 2
DEFAULT_SWEEP_INTERVAL_SECONDS = 60
DEFAULT_SWEEP_PENDING_SECONDS = 300
DEFAULT_RECONCILE_INTERVAL_SECONDS = 300
DEFAULT_RECONCILE_OVERLAP_SECONDS = 600
DEFAULT_RECONCILE_LOOKBACK_SECONDS = 3 * 24 * 3600
DEFAULT_EVENT_RETENTION_DAYS = 90
# How long a queued body that no configured key decrypts is retried before it is quarantined:
# long enough for a deploy that gave the web process a new key before the workers to finish.
DEFAULT_UNDECRYPTABLE_RETRY_SECONDS = 3600
# The Stripe SDK's own retries of one request (see shared.infra.stripe_gateway).
STRIPE_MAX_NETWORK_RETRIES = 2
# Stripe's Events API only returns the last 30 days.
STRIPE_EVENTS_RETENTION_SECONDS = 30 * 24 * 3600

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


# Addresses only this host reaches: a metrics endpoint bound elsewhere needs a token.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

# What an operator's token may do under /admin/: read (the dead letters, a payment), replay
# (dead runs, events) and refund (refunds, captures and cancels: the calls that move money).
OPERATOR_SCOPES = frozenset({"read", "replay", "refund"})


@dataclass(frozen=True)
class Operator:
    """One operator's token (ADMIN_TOKENS): several tokens may share a name while one is
    rotated, and the audit table names the operator, never the token."""

    name: str
    scopes: frozenset[str]
    token: str = field(repr=False)


@dataclass(frozen=True)
class Settings:
    stripe_secret_key: str = field(repr=False)
    stripe_publishable_key: str
    # Several secrets are valid at once while one is being rolled.
    stripe_webhook_secrets: tuple[str, ...] = field(repr=False)
    redis_url: str
    database_url: str
    # BROKER_URL as given; unset, the broker is the Redis at REDIS_URL (see ``broker``).
    broker_url: str | None = None
    # The Sentinel master name, required by (and only for) a sentinel:// BROKER_URL.
    broker_sentinel_master: str | None = None
    stripe_api_base: str | None = None
    sentry_dsn: str | None = field(default=None, repr=False)
    webhook_tolerance_seconds: int = DEFAULT_WEBHOOK_TOLERANCE_SECONDS
    visibility_timeout_seconds: int = DEFAULT_VISIBILITY_TIMEOUT_SECONDS
    handler_max_attempts: int = DEFAULT_HANDLER_MAX_ATTEMPTS
    # First deliveries a worker ingests in one transaction (shared.ledger.ingest.first_delivery); 1
    # ingests each on its own, as a task.
    ingest_batch_size: int = DEFAULT_INGEST_BATCH_SIZE
    stripe_timeout_seconds: int = DEFAULT_STRIPE_TIMEOUT_SECONDS
    # The name of each webhook secret's endpoint, in the same order (STRIPE_WEBHOOK_SECRET's
    # name=whsec_...; its position when unnamed): what the which-secret-matched metric says.
    stripe_webhook_endpoints: tuple[str, ...] = ()
    # Sent as Stripe-Version on every call this service makes (shared.infra.stripe_gateway).
    stripe_api_version: str = DEFAULT_STRIPE_API_VERSION
    log_level: str = "INFO"
    # Attempts for failures that retrying cannot fix (a handler bug); transient ones get
    # handler_max_attempts.
    handler_max_permanent_attempts: int = DEFAULT_HANDLER_MAX_PERMANENT_ATTEMPTS
    retry_base_seconds: int = DEFAULT_RETRY_BASE_SECONDS
    # The longest one handler attempt may run before Celery kills it (and it counts as failed).
    handler_time_limit_seconds: int = 300
    # A worker that has not reached its broker for this long exits (status 69) for its
    # supervisor to restart it (shared.infra.broker_watchdog); 0 never does.
    broker_unreachable_exit_seconds: int = 60
    sweep_interval_seconds: int = DEFAULT_SWEEP_INTERVAL_SECONDS
    # How often beat starts a relay pass over the outbox of handlers' side effects.
    effects_relay_interval_seconds: int = 2
    # The built-in effects: the longest any one network wait of a delivery may take, and the
    # SMTP server and sender of the email effect.
    effects_timeout_seconds: int = 10
    smtp_host: str = "localhost"
    smtp_port: int = 25
    effects_email_from: str = "payments@localhost"
    sweep_pending_seconds: int = DEFAULT_SWEEP_PENDING_SECONDS
    reconcile_interval_seconds: int = DEFAULT_RECONCILE_INTERVAL_SECONDS
    # Beat prunes events (and their finished runs) older than this; 0 keeps them for ever.
    event_retention_days: int = DEFAULT_EVENT_RETENTION_DAYS
    reconcile_overlap_seconds: int = DEFAULT_RECONCILE_OVERLAP_SECONDS
    reconcile_lookback_seconds: int = DEFAULT_RECONCILE_LOOKBACK_SECONDS
    # The operators' tokens for /admin/ (ADMIN_TOKENS, and ADMIN_TOKEN as "admin" with every
    # scope); none turns the admin API off.
    operators: tuple[Operator, ...] = ()
    # Extra modules whose handlers the workers load (our own are always loaded).
    handler_modules: tuple[str, ...] = ()
    # The queues handlers of their own run on (@registry.handles(..., queue=...)): declared by
    # every process, each for a worker of its own to consume.
    handler_queues: tuple[str, ...] = ()
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
    # The demo checkout page at / (dev only): it lets the browser choose the amount, creating
    # its checkout session without an API client key. Refused at start anywhere but the stand-in.
    checkout_demo: bool = False
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
    # Failed attempts (declines, failed 3-D Secure) that end a checkout session and cancel its
    # PaymentIntent: past them it is a card tester's, not a customer's.
    checkout_max_failed_attempts: int = 5

    @property
    def broker(self) -> str:
        """The one broker every process publishes to and consumes from."""
        return self.broker_url or self.redis_url

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
