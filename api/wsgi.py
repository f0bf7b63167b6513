"""WSGI entry point for gunicorn: ``gunicorn api.wsgi:app``."""

import sys

from api import create_app
from shared.config import ConfigError, load_settings
from shared.observability.logs import configure_logging
from shared.observability.sentry import init_sentry

# gunicorn stops, instead of booting workers in a loop, when a worker exits with this code.
GUNICORN_APP_LOAD_ERROR = 4

try:
    settings = load_settings()
except ConfigError as exc:
    print(f"configuration error: {exc}", file=sys.stderr)
    raise SystemExit(GUNICORN_APP_LOAD_ERROR) from None

configure_logging(settings.log_level, settings.log_format)
init_sentry(settings, component="web")
app = create_app(settings)
