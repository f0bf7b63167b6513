"""The worker's /metrics endpoint: every prefork child's samples plus the ledger's gauges (dead
letters, queue depths), served off the worker's main process. It sits above the ledger and the
broker it reads, beside the worker that starts it."""

from __future__ import annotations

from shared.config import LOOPBACK_HOSTS, Settings
from shared.observability.metrics_http import WSGIServer, bearer_only, serve_in_thread


def start_worker_metrics(settings: Settings) -> WSGIServer:
    """Serve the worker's /metrics: every prefork child's samples plus the ledger gauges. Off
    loopback, only to ``Authorization: Bearer $METRICS_TOKEN`` (the settings refuse such a
    host without one)."""
    from prometheus_client import make_wsgi_app

    from shared.db import make_engine, make_session_factory
    from shared.effects.relay import count_dead_effects
    from shared.infra.broker import make_producer, queue_depths
    from shared.infra.topology import dead_letter_depth
    from shared.ledger.recovery.dead_letters import count_dead
    from shared.ledger.recovery.held import count_held
    from shared.observability.metrics import LedgerCollector, scrape_registry

    # Its own small pool and producer, separate from the tasks'.
    sessions = make_session_factory(make_engine(settings.database_url, pool_size=1))
    producer = make_producer(settings)
    registry = scrape_registry(
        settings.prometheus_multiproc_dir,
        LedgerCollector(
            lambda: count_dead(sessions),
            lambda: queue_depths(producer),
            lambda: dead_letter_depth(producer),
            lambda: count_dead_effects(sessions),
            lambda: count_held(sessions),
        ),
    )
    app = make_wsgi_app(registry)
    if settings.worker_metrics_host not in LOOPBACK_HOSTS:
        app = bearer_only(app, settings.metrics_token or "")
    return serve_in_thread(app, settings.worker_metrics_host, settings.worker_metrics_port or 0)
