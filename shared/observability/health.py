"""Readiness and worker liveness checks."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.infra.broker import EVENTS_QUEUE, HANDLERS_QUEUE
from shared.models import WorkerCanary
from shared.observability.worker_brokers import broker_agreement
from shared.task_names import CANARY_TASK


def database_ready(sessions: sessionmaker[Session]) -> bool:
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure means not ready; the caller names it
        return False
    return True


def broker_ready(app: Celery, timeout: float = 2.0) -> bool:
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
            # A connection can open while the server refuses work (e.g. still loading): ask it
            # something, by declaring the events queue exactly as the workers do.
            app.amqp.queues[EVENTS_QUEUE](connection.default_channel).queue_declare()
    except Exception:  # noqa: BLE001 - any failure means not ready; the caller names it
        return False
    return True


def workers_share_broker(sessions: sessionmaker[Session], broker_url: str) -> bool:
    """False when workers are alive and none consumes from ``broker_url``: what this process
    queues would never be worked. Unknown (the database down) counts as True: the database
    check names that."""
    try:
        return not broker_agreement(sessions, broker_url).stalled
    except Exception:  # noqa: BLE001 - the database check reports the database
        return True


def record_canary(sessions: sessionmaker[Session], token: str) -> None:
    with transaction(sessions) as session:
        session.execute(
            update(WorkerCanary)
            .where(WorkerCanary.token == token)
            .values(seen_at=dt.datetime.now(dt.UTC))
        )


@dataclass(frozen=True)
class WorkerCheck:
    pinged: list[str]
    queues_consumed: dict[str, bool]

    @property
    def healthy(self) -> bool:
        return bool(self.pinged) and all(self.queues_consumed.values())


def check_workers(app: Celery, sessions: sessionmaker[Session], timeout: float) -> WorkerCheck:
    """Ping the workers, then send a canary task to each queue and wait for it to run.

    A ping alone is not enough: after a Redis restart a worker can answer pings yet consume
    nothing (celery#10205). The canaries prove each queue is being worked.
    """
    replies = app.control.ping(timeout=min(timeout, 2.0)) or []
    pinged = sorted(name for reply in replies for name in reply)
    tokens = {queue: secrets.token_hex(16) for queue in (EVENTS_QUEUE, HANDLERS_QUEUE)}
    with transaction(sessions) as session:
        for queue, token in tokens.items():
            session.add(WorkerCanary(token=token, queue=queue))
    for queue, token in tokens.items():
        # expires: a canary nobody ran in time must not run later and confuse the next check.
        app.send_task(CANARY_TASK, args=[token], queue=queue, expires=timeout)
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline and len(seen) < len(tokens):
        with sessions() as session:
            seen = set(
                session.execute(
                    select(WorkerCanary.token).where(
                        WorkerCanary.token.in_(tokens.values()), WorkerCanary.seen_at.is_not(None)
                    )
                ).scalars()
            )
        time.sleep(0.2)
    with transaction(sessions) as session:
        session.execute(delete(WorkerCanary).where(WorkerCanary.token.in_(tokens.values())))
        # Old canaries of checks that crashed midway.
        session.execute(
            delete(WorkerCanary).where(
                WorkerCanary.created_at < dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
            )
        )
    return WorkerCheck(pinged, {queue: token in seen for queue, token in tokens.items()})
