"""Celery configuration for the workers, built from the same settings as the web process.

Every value comes from ``shared.infra.broker.celery_settings``; this module only exposes them
under the names Celery reads (``app.config_from_object("celeryconfig")``).
"""

from shared.config import ConfigError, load_settings
from shared.infra.broker import celery_settings

try:
    globals().update(celery_settings(load_settings()))
except ConfigError as exc:
    raise SystemExit(f"configuration error: {exc}") from None
