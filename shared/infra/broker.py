"""Celery settings and the producer side of our queues.

Both the web process (which only publishes) and the workers build their Celery app from
``celery_settings``, so every setting that carries a delivery promise lives in one place.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from shared.config import Settings, pin_broker
from shared.infra.task_auth import SigningCelery
from shared.infra.task_batches import prefetch_multiplier
from shared.infra.time_limits import soft_time_limit
from shared.infra.topology import (
    amqp_settings,
    broker_countdown,
    delivery_limit,
    is_amqp,
    task_queues,
)
from shared.task_names import (
    INGEST_EVENT_TASK,
    PRUNE_TASK,
    RECONCILE_TASK,
    RELAY_EFFECTS_TASK,
    RUN_HANDLER_TASK,
    SWEEP_TASK,
)

# Pruning works in small batches: hourly keeps each run short, whatever the traffic.
PRUNE_INTERVAL_SECONDS = 3600.0
EVENTS_QUEUE = "events"
HANDLERS_QUEUE = "handlers"
# Handlers' side effects wait on servers outside (SMTP, HTTP): a queue and worker of their own,
# so a slow one never holds up the ledger's processes.
EFFECTS_QUEUE = "effects"
WORK_QUEUES = (EVENTS_QUEUE, HANDLERS_QUEUE, EFFECTS_QUEUE)


def celery_settings(settings: Settings) -> dict[str, Any]:
    pin_broker(settings.broker)
    return {
        **_broker_settings(settings),
        **amqp_settings(settings.broker),
        **_delivery_settings(settings),
        **_routing_settings(settings),
        **_schedule_settings(settings),
        **_time_limit_settings(settings.handler_time_limit_seconds),
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        "timezone": "UTC",
    }


def _broker_settings(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker,
        **({} if is_amqp(settings.broker) else _redis_broker_settings(settings)),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "broker_connection_timeout": 5,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
    }


UNACKED_RESTORE_SECONDS = 10


def _redis_broker_settings(settings: Settings) -> dict[str, Any]:
    transport_options: dict[str, Any] = {
        # Redis re-delivers an unacked message after this long; a retry countdown must stay
        # well below it or the message is delivered twice while it waits.
        "visibility_timeout": settings.visibility_timeout_seconds,
        # Messages past the visibility timeout are given back by a scan each worker runs; kombu
        # scans every 100 s by default (10 s x a throttle of 10), which a lost host's messages
        # would wait on top of the timeout. One scan every 10 s is one Redis query each.
        "unacked_restore_interval": UNACKED_RESTORE_SECONDS,
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
        "socket_keepalive": True,
        "retry_on_timeout": True,
    }
    if settings.broker_sentinel_master:
        # kombu asks the sentinels in BROKER_URL which Redis is this master now, and asks
        # again after a failover.
        transport_options["master_name"] = settings.broker_sentinel_master
    return {
        # Celery reads the visibility timeout from both; they must agree.
        "broker_transport_options": transport_options,
        "result_backend_transport_options": {
            "visibility_timeout": settings.visibility_timeout_seconds
        },
    }


def _delivery_settings(settings: Settings) -> dict[str, Any]:
    # Acknowledged only after the task ran, and given back if its worker dies: at least once.
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A task killed at its hard time limit goes back to the queue rather than being
        # acknowledged: an ingest that never committed (it waited on a partitioned host's row)
        # would otherwise be lost until the reconciler. Leases count the attempt either way.
        "task_acks_on_timeout": False,
        # Room for the events a worker ingests together (shared.infra.task_batches).
        "worker_prefetch_multiplier": prefetch_multiplier(settings.ingest_batch_size),
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
    }


def _routing_settings(settings: Settings) -> dict[str, Any]:
    limit = delivery_limit(settings.handler_max_attempts)
    return {
        "task_queues": task_queues(
            settings.broker, (*WORK_QUEUES, *settings.handler_queues), limit
        ),
        "task_default_exchange": HANDLERS_QUEUE,
        "task_default_routing_key": HANDLERS_QUEUE,
        "task_default_queue": HANDLERS_QUEUE,
        "task_routes": {
            INGEST_EVENT_TASK: {"queue": EVENTS_QUEUE},
            RUN_HANDLER_TASK: {"queue": HANDLERS_QUEUE},
            # Maintenance rides on the events queue: it is short and every worker consumes it.
            SWEEP_TASK: {"queue": EVENTS_QUEUE},
            RECONCILE_TASK: {"queue": EVENTS_QUEUE},
            PRUNE_TASK: {"queue": EVENTS_QUEUE},
            RELAY_EFFECTS_TASK: {"queue": EFFECTS_QUEUE},
        },
        "task_create_missing_queues": False,
    }


def _schedule_settings(settings: Settings) -> dict[str, Any]:
    # A run that waited longer than its interval is superseded by the next one.
    return {
        "beat_schedule": {
            "sweep-pending-runs": {
                "task": SWEEP_TASK,
                "schedule": float(settings.sweep_interval_seconds),
                "options": {"expires": float(settings.sweep_interval_seconds)},
            },
            "reconcile-stripe-events": {
                "task": RECONCILE_TASK,
                "schedule": float(settings.reconcile_interval_seconds),
                "options": {"expires": float(settings.reconcile_interval_seconds)},
            },
            "relay-effects": {
                "task": RELAY_EFFECTS_TASK,
                "schedule": float(settings.effects_relay_interval_seconds),
                "options": {"expires": float(settings.effects_relay_interval_seconds)},
            },
            **_prune_schedule(settings),
        }
    }


def _prune_schedule(settings: Settings) -> dict[str, Any]:
    if not settings.event_retention_days:
        return {}
    return {
        "prune-old-events": {
            "task": PRUNE_TASK,
            "schedule": PRUNE_INTERVAL_SECONDS,
            "options": {"expires": PRUNE_INTERVAL_SECONDS},
        }
    }


def _time_limit_settings(time_limit_seconds: float) -> dict[str, Any]:
    # A handler that hangs is killed, its attempt counted (see shared.ledger.runs.task), and
    # retried. Ingest applies the runs it claims itself (shared.ledger.runs.apply), so it is
    # bound the same.
    # The retry policy's leases are built on the same limits (RetryPolicy.from_settings).
    limits = {
        "time_limit": time_limit_seconds,
        "soft_time_limit": soft_time_limit(time_limit_seconds),
    }
    return {"task_annotations": {RUN_HANDLER_TASK: limits, INGEST_EVENT_TASK: limits}}


def make_producer(settings: Settings, *, connect_timeout_seconds: float | None = None) -> Celery:
    """``connect_timeout_seconds``: for a process whose caller waits on each publish."""
    app = SigningCelery("payments-producer", set_as_current=False)
    app.conf.update(celery_settings(settings))
    if connect_timeout_seconds is not None:
        app.conf.broker_connection_timeout = connect_timeout_seconds
    # The tasks it sends are signed with these (shared.infra.task_auth).
    app.use_keys(settings.encryption_keys)
    return app


def queue_depths(app: Celery) -> dict[str, int]:
    """Messages waiting per queue, asked of the broker. Declaring a queue exactly as the workers
    do is harmless and answers its message count on Redis and RabbitMQ alike (a passive
    declare fails on Redis while the queue is empty)."""
    depths = {}
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        for name in WORK_QUEUES:
            declared = app.amqp.queues[name](channel).queue_declare()
            depths[name] = int(declared.message_count)
    return depths


def enqueue_run(
    app: Celery,
    event_id: str,
    handler: str,
    countdown: float | None = None,
    *,
    queue: str | None = None,
    time_limit_seconds: float | None = None,
) -> None:
    """``queue`` and ``time_limit_seconds``: a handler's own, where it has them
    (shared.ledger.runs.enqueue)."""
    countdown = broker_countdown(app.conf.broker_url, countdown)
    options: dict[str, Any] = {"queue": queue} if queue else {}
    if time_limit_seconds:
        options["time_limit"] = time_limit_seconds
        options["soft_time_limit"] = soft_time_limit(time_limit_seconds)
    app.send_task(RUN_HANDLER_TASK, args=[event_id, handler], countdown=countdown, **options)
