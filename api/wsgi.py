"""WSGI entry point for gunicorn: ``gunicorn api.wsgi:app``."""

from api import create_app
from shared.config import ConfigError, load_settings
from shared.logging import configure_logging
from shared.observability import init_sentry

try:
    settings = load_settings()
except ConfigError as exc:
    raise SystemExit(f"configuration error: {exc}") from None

configure_logging(settings.log_level)
init_sentry(settings, component="web")
app = create_app(settings)
