"""The workers' Celery app: ``celery -A workers.celery_app worker -Q events,handlers``."""

import os
from typing import Any

from celery.signals import (
    beat_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from shared.config import load_settings
from shared.db import make_engine, make_session_factory
from shared.infra.broker_watchdog import PROBE_INTERVAL_SECONDS, BrokerWatchdog, broker_probe
from shared.infra.database_watch import DatabaseWatch, QueueSwitch, database_probe
from shared.infra.redis_transport import guard_closed_connections
from shared.infra.task_auth import AuthenticatedTask, SigningCelery
from shared.infra.topology import declare_dead_letters
from shared.ledger.handlers import load_handler_modules
from shared.observability.logs import bind, clear_context, configure_logging, install_redaction
from shared.observability.metrics import mark_process_dead, reset_multiprocess_dir
from shared.observability.sentry import init_sentry
from shared.observability.worker_brokers import WorkerNotes
from shared.worker_metrics import start_worker_metrics

# Before Celery sets up its own handlers: every record it prints is redacted at creation.
install_redaction()
# A Redis restart under a busy worker must not end it (see shared.infra.redis_transport).
guard_closed_connections()

# Every task body from the broker is checked before it runs (shared.infra.task_auth).
app = SigningCelery("payments", task_cls=AuthenticatedTask)
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)


@setup_logging.connect
def _setup_logging(**_: Any) -> None:
    # Connected, so Celery leaves logging to us: one format for every line the worker prints.
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)


@task_prerun.connect
def _bind_task(task_id: str | None = None, **_: Any) -> None:
    clear_context()
    bind(task_id=task_id)


@task_postrun.connect
def _unbind_task(**_: Any) -> None:
    clear_context()


@worker_init.connect
def _prepare_worker(**_: Any) -> None:
    settings = load_settings()
    app.use_keys(settings.encryption_keys)
    init_sentry(settings, component="worker")
    # Fail at start, not on the first task, when a configured handler module does not import.
    load_handler_modules(settings.handler_modules)
    reset_multiprocess_dir(settings.prometheus_multiproc_dir)
    if settings.worker_metrics_port:
        start_worker_metrics(settings)


_notes: list[WorkerNotes] = []


@worker_ready.connect
def _declare_dead_letters(**_: Any) -> None:
    # RabbitMQ moves a message past its delivery limit here; no queue bound, and it is dropped.
    declare_dead_letters(app)


@worker_ready.connect
def _note_broker(sender: Any = None, **_: Any) -> None:
    # Which broker this worker consumes from, for worker-check and readiness to compare.
    settings = load_settings()
    sessions = make_session_factory(make_engine(settings.database_url, pool_size=1))
    notes = WorkerNotes(sessions, getattr(sender, "hostname", None) or "worker", settings.broker)
    notes.start()
    _notes.append(notes)


_watchdogs: list[BrokerWatchdog] = []


@worker_init.connect
def _watch_broker(sender: Any = None, **_: Any) -> None:
    # Outside the event loop, which freezes when the broker stops answering (celery#4804); from
    # the start, so a worker that never reaches its broker (restarted during a cut) ends too.
    _start_watchdog()
    _watch_database(sender.hostname)


_database_watches: list[DatabaseWatch] = []


def _watch_database(hostname: str) -> None:
    switch = QueueSwitch(app, hostname)
    watch = DatabaseWatch(database_probe(load_settings().database_url), switch.pause, switch.resume)
    watch.start()
    _database_watches.append(watch)


def _start_watchdog() -> None:
    bound = load_settings().broker_unreachable_exit_seconds
    if bound:
        watchdog = BrokerWatchdog(
            broker_probe(app), bound_seconds=bound, interval_seconds=PROBE_INTERVAL_SECONDS
        )
        watchdog.start()
        _watchdogs.append(watchdog)


@worker_shutdown.connect
def _forget_broker(**_: Any) -> None:
    while _notes:
        _notes.pop().stop()
    while _watchdogs:
        _watchdogs.pop().stop()
    while _database_watches:
        _database_watches.pop().stop()


@beat_init.connect
def _prepare_beat(sender: Any = None, **_: Any) -> None:
    # Beat keeps its schedule in a file (--schedule); a Procfile runner made no directory for it.
    schedule = getattr(sender, "schedule", None)
    if isinstance(schedule, str) and os.path.dirname(schedule):
        os.makedirs(os.path.dirname(schedule), exist_ok=True)
    # Beat's tasks are signed as everything else this service queues.
    app.use_keys(load_settings().encryption_keys)
    # Beat's publish retries on a broker that stops answering: bounded the same way.
    _start_watchdog()


@worker_process_shutdown.connect
def _retire_metrics(pid: int | None = None, **_: Any) -> None:
    mark_process_dead(load_settings().prometheus_multiproc_dir, pid or os.getpid())
