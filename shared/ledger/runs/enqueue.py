"""Sending a handler run to its worker: on the handler's own queue, with its own time limit,
where it has them (shared.ledger.handlers.HandlerPolicy), on the ledger's handlers queue
otherwise. Every path that enqueues a run comes here: after ingest, a retry, the sweeper, the
reconciler, a replay."""

from __future__ import annotations

from typing import Any

from celery import Celery

from shared.infra.broker import enqueue_run
from shared.ledger.handlers import HandlerRegistry
from shared.ledger.retry import RetryPolicy


def enqueue_handler_run(
    app: Celery,
    registry: HandlerRegistry,
    event_id: str,
    handler: str,
    countdown: float | None = None,
) -> None:
    policy = registry.policy_of(handler)
    enqueue_run(
        app,
        event_id,
        handler,
        countdown,
        queue=policy.queue,
        time_limit_seconds=policy.time_limit_seconds,
    )


def retry_options(
    registry: HandlerRegistry, handler: str, policy: RetryPolicy, *, default_queue: str
) -> dict[str, Any]:
    """What a run's task retry is sent with: its handler's queue, and its own time limits
    (``policy`` is the handler's, shared.ledger.handlers.HandlerRegistry.retry_policy)."""
    own = registry.policy_of(handler)
    options: dict[str, Any] = {"queue": own.queue or default_queue}
    if own.time_limit_seconds:
        options["time_limit"] = own.time_limit_seconds
        options["soft_time_limit"] = policy.soft_time_limit_seconds
    return options
