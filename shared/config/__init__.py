"""Settings, read from the environment in one place.

Nothing else in the project reads the process environment: the web process, the workers and the
CLI all call ``load_settings()`` and pass the result along. A missing or malformed required value
raises ``ConfigError`` whose message is one line naming the variable; entry points print it and
exit.
The settings and their defaults live in ``settings``, one reader per kind of value in
``readers``, and ``loading`` reads them all.
"""

from shared.config.loading import (
    load_settings,
    pin_broker,
    prometheus_multiproc_dir,
    refuse_public_dev_values,
)
from shared.config.settings import (
    DEFAULT_HANDLER_MAX_ATTEMPTS,
    DEFAULT_HANDLER_MAX_PERMANENT_ATTEMPTS,
    DEFAULT_RECONCILE_INTERVAL_SECONDS,
    DEFAULT_RECONCILE_LOOKBACK_SECONDS,
    DEFAULT_RECONCILE_OVERLAP_SECONDS,
    DEFAULT_RETRY_BASE_SECONDS,
    DEFAULT_STRIPE_TIMEOUT_SECONDS,
    DEFAULT_SWEEP_INTERVAL_SECONDS,
    DEFAULT_SWEEP_PENDING_SECONDS,
    DEFAULT_UNDECRYPTABLE_RETRY_SECONDS,
    DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
    DEFAULT_WEBHOOK_TOLERANCE_SECONDS,
    LOOPBACK_HOSTS,
    OPERATOR_SCOPES,
    PUBLIC_DEV_VALUES,
    STRIPE_EVENTS_RETENTION_SECONDS,
    STRIPE_MAX_NETWORK_RETRIES,
    ConfigError,
    Operator,
    Settings,
)

__all__ = [
    "DEFAULT_HANDLER_MAX_ATTEMPTS",
    "DEFAULT_HANDLER_MAX_PERMANENT_ATTEMPTS",
    "DEFAULT_RECONCILE_INTERVAL_SECONDS",
    "DEFAULT_RECONCILE_LOOKBACK_SECONDS",
    "DEFAULT_RECONCILE_OVERLAP_SECONDS",
    "DEFAULT_RETRY_BASE_SECONDS",
    "DEFAULT_STRIPE_TIMEOUT_SECONDS",
    "DEFAULT_SWEEP_INTERVAL_SECONDS",
    "DEFAULT_SWEEP_PENDING_SECONDS",
    "DEFAULT_UNDECRYPTABLE_RETRY_SECONDS",
    "DEFAULT_VISIBILITY_TIMEOUT_SECONDS",
    "DEFAULT_WEBHOOK_TOLERANCE_SECONDS",
    "LOOPBACK_HOSTS",
    "OPERATOR_SCOPES",
    "PUBLIC_DEV_VALUES",
    "STRIPE_EVENTS_RETENTION_SECONDS",
    "STRIPE_MAX_NETWORK_RETRIES",
    "ConfigError",
    "Operator",
    "Settings",
    "load_settings",
    "pin_broker",
    "prometheus_multiproc_dir",
    "refuse_public_dev_values",
]
