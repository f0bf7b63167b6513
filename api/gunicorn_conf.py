"""gunicorn settings hooks: ``gunicorn -c python:api.gunicorn_conf api.wsgi:app``.

With PROMETHEUS_MULTIPROC_DIR set, the metric files of this server's workers live there: the
directory is emptied when the server starts and a worker's files are retired when it exits.
"""

from typing import Any

from shared.config import ConfigError, load_settings
from shared.metrics import mark_process_dead, reset_multiprocess_dir


def _metrics_dir() -> str | None:
    try:
        return load_settings().prometheus_multiproc_dir
    except ConfigError:
        return None  # the app itself reports the configuration error on load


def on_starting(server: Any) -> None:
    reset_multiprocess_dir(_metrics_dir())


def child_exit(server: Any, worker: Any) -> None:
    mark_process_dead(_metrics_dir(), worker.pid)
