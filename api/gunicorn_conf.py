"""gunicorn settings and hooks: ``gunicorn -c python:api.gunicorn_conf api.wsgi:app``.

Worker class: gevent. ``/webhook`` must answer Stripe in milliseconds whatever else is going
on, and sync workers give each connection a whole process: two clients sending a byte a second
(or two create-payment calls waiting on a slow Stripe) stopped every request. A gevent worker
serves up to ``worker_connections`` at once, waiting on slow clients, Stripe, Redis and (made
cooperative in ``post_fork``) PostgreSQL without blocking the others. In production a buffering
proxy sits in front all the same (README, "Behind a proxy"): it absorbs slow clients entirely.

With PROMETHEUS_MULTIPROC_DIR set, the metric files of this server's workers live there: the
directory is created and emptied when the server starts, and a worker's files are retired when
it exits.
"""

from typing import Any

from shared.config import ConfigError, load_settings
from shared.observability.metrics import mark_process_dead, reset_multiprocess_dir

worker_class = "gevent"
# Per worker process. Past this a worker stops accepting; the kernel's backlog holds the rest.
worker_connections = 1000
# Seconds a worker may stay silent before the arbiter restarts it (gevent workers heartbeat
# from their loop, so only a worker whose loop is truly stuck is restarted).
timeout = 30
graceful_timeout = 30
# Idle keep-alive connections are closed after this: a slow client cannot hoard them.
keepalive = 5
# Request line and headers: Stripe's are small; refuse anything absurd before reading a body.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190


def _metrics_dir() -> str | None:
    try:
        return load_settings().prometheus_multiproc_dir
    except ConfigError:
        return None  # the app itself reports the configuration error on load


def on_starting(server: Any) -> None:
    reset_multiprocess_dir(_metrics_dir())


def post_fork(server: Any, worker: Any) -> None:
    from shared.infra.green import make_psycopg2_cooperative
    from shared.runtime import web_green_waits

    make_psycopg2_cooperative(web_green_waits())


def child_exit(server: Any, worker: Any) -> None:
    mark_process_dead(_metrics_dir(), worker.pid)
