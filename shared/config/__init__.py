"""Settings, read from the environment in one place.

Nothing else in the project reads the process environment: the web process, the workers and the
CLI all call ``load_settings()`` and pass the result along. A missing or malformed required value
raises ``ConfigError`` whose message is one line naming the variable; entry points print it and
exit.
The settings and their defaults live in ``settings``, one reader per kind of value in
``readers``, and ``loading`` reads them all.
"""

from shared.config.loading import load_settings, prometheus_multiproc_dir, refuse_public_dev_values
from shared.config.settings import (
    PUBLIC_DEV_VALUES,
    STRIPE_EVENTS_RETENTION_SECONDS,
    STRIPE_MAX_NETWORK_RETRIES,
    ConfigError,
    Settings,
)

__all__ = [
    "PUBLIC_DEV_VALUES",
    "STRIPE_EVENTS_RETENTION_SECONDS",
    "STRIPE_MAX_NETWORK_RETRIES",
    "ConfigError",
    "Settings",
    "load_settings",
    "prometheus_multiproc_dir",
    "refuse_public_dev_values",
]
