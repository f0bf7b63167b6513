"""The sweeper: pending runs whose message the broker lost, found from their rows."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, or_, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.models import HandlerRun, RunStatus


def sweep_pending(
    sessions: sessionmaker[Session], older_than_seconds: int, *, limit: int = 1000
) -> list[tuple[str, str]]:
    """Pending runs nobody has touched for a while and whose retry is not still ahead.

    The broker can lose a message (a killed worker, a Redis restart); the row cannot. Each run
    returned is marked touched, so it is re-sent at most once per threshold.
    """
    cutoff = func.now() - dt.timedelta(seconds=older_than_seconds)
    lost = (
        select(HandlerRun.event_id, HandlerRun.handler)
        .where(
            HandlerRun.status == RunStatus.PENDING,
            HandlerRun.updated_at < cutoff,
            func.coalesce(HandlerRun.next_attempt_at, HandlerRun.updated_at) < cutoff,
            # A run some worker holds right now is not lost.
            or_(HandlerRun.leased_until.is_(None), HandlerRun.leased_until < func.now()),
        )
        .order_by(HandlerRun.updated_at)
        .limit(limit)
        # Two sweepers at once split the work instead of sending everything twice.
        .with_for_update(skip_locked=True)
    )
    # One statement for all of them: touching each run as an ORM object took a round trip
    # per run, hundreds of milliseconds for a thousand.
    touch = (
        update(HandlerRun)
        .where(tuple_(HandlerRun.event_id, HandlerRun.handler).in_(lost))
        .values(updated_at=func.now())
        .returning(HandlerRun.event_id, HandlerRun.handler)
    )
    with transaction(sessions) as session:
        return sorted((event_id, handler) for event_id, handler in session.execute(touch))
