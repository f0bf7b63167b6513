"""Held runs: a handler that declares the Stripe API versions it reads is never given an event
of another version (an endpoint still on an old version, a migration half done). Its run is
written held: not applied, not lost, counted (the ``held_runs`` gauge, alert
``PaymentsRunsHeld``), listed (`payments events held`), and kept by retention until an operator
releases it (`payments events release`), once the handler reads that version, or replays the
event as Stripe renders it now (`payments events replay`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.models import HandlerRun, RunStatus, StripeEvent


@dataclass(frozen=True)
class HeldRun:
    event_id: str
    handler: str
    event_type: str
    api_version: str | None
    held_since: dt.datetime


def list_held(sessions: sessionmaker[Session], limit: int = 200) -> list[HeldRun]:
    """The held runs, oldest first."""
    with sessions() as session:
        rows = session.execute(
            select(
                HandlerRun.event_id,
                HandlerRun.handler,
                StripeEvent.type,
                StripeEvent.api_version,
                HandlerRun.created_at,
            )
            .join(StripeEvent, StripeEvent.id == HandlerRun.event_id)
            .where(HandlerRun.status == RunStatus.HELD)
            .order_by(HandlerRun.created_at, HandlerRun.event_id, HandlerRun.handler)
            .limit(limit)
        ).all()
    return [HeldRun(*row) for row in rows]


def count_held(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        query = select(func.count()).where(HandlerRun.status == RunStatus.HELD)
        return int(session.scalar(query) or 0)


def release_held(
    sessions: sessionmaker[Session],
    enqueue: Callable[[str, str], None],
    *,
    event_id: str | None = None,
    handler: str | None = None,
) -> list[tuple[str, str]]:
    """Make held runs (all, or an event's, or a handler's) pending, then enqueue each after the
    commit. Idempotent: a run that is not held is left alone."""
    statement = (
        update(HandlerRun)
        .where(HandlerRun.status == RunStatus.HELD)
        .values(status=RunStatus.PENDING, updated_at=func.now())
        .returning(HandlerRun.event_id, HandlerRun.handler)
    )
    if event_id is not None:
        statement = statement.where(HandlerRun.event_id == event_id)
    if handler is not None:
        statement = statement.where(HandlerRun.handler == handler)
    with transaction(sessions) as session:
        released = [(row[0], row[1]) for row in session.execute(statement)]
    for run_event, run_handler in released:
        enqueue(run_event, run_handler)
    return released
