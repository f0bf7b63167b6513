"""The dead-letter list: listing dead runs and sending them back.

Every operation changes rows first and returns the runs to enqueue; the caller sends the tasks
after the commit, so a task never looks for a row that is not there yet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.ledger.runs.rows import lock_run
from shared.models import HandlerRun, RunStatus, StripeEvent

Enqueue = Callable[[str, str], None]


@dataclass(frozen=True)
class RunFilter:
    event_type: str | None = None
    handler: str | None = None
    since: dt.datetime | None = None
    error_contains: str | None = None


@dataclass(frozen=True)
class ListedRun:
    """A handler run as the dead-letter list and the replays show it (not the row itself:
    ``HandlerRun`` is the row, ``runs.rows`` the functions that change it)."""

    event_id: str
    handler: str
    event_type: str
    status: str
    attempts: int
    replays: int
    updated_at: dt.datetime
    last_error: str | None

    @property
    def run_id(self) -> str:
        return f"{self.event_id}/{self.handler}"

    @property
    def error_line(self) -> str:
        """The last line of the error: the exception type and message."""
        if not self.last_error:
            return ""
        lines = [line for line in self.last_error.strip().splitlines() if line.strip()]
        return lines[-1] if lines else ""


def _dead_runs_query(filters: RunFilter) -> Select[HandlerRun, str]:
    query = (
        select(HandlerRun, StripeEvent.type)
        .join(StripeEvent, StripeEvent.id == HandlerRun.event_id)
        .where(HandlerRun.status == RunStatus.DEAD)
    )
    if filters.event_type:
        query = query.where(StripeEvent.type == filters.event_type)
    if filters.handler:
        query = query.where(HandlerRun.handler == filters.handler)
    if filters.since:
        query = query.where(HandlerRun.updated_at >= filters.since)
    if filters.error_contains:
        query = query.where(
            HandlerRun.last_error.icontains(filters.error_contains, autoescape=True)
        )
    return query.order_by(HandlerRun.updated_at, HandlerRun.event_id, HandlerRun.handler)


def _row(run: HandlerRun, event_type: str) -> ListedRun:
    return ListedRun(
        run.event_id,
        run.handler,
        event_type,
        run.status,
        run.attempts,
        run.replays,
        run.updated_at,
        run.last_error,
    )


def list_dead(
    sessions: sessionmaker[Session], filters: RunFilter, limit: int | None = None
) -> list[ListedRun]:
    query = _dead_runs_query(filters)
    if limit is not None:
        query = query.limit(limit)
    with sessions() as session:
        return [_row(run, event_type) for run, event_type in session.execute(query)]


def count_dead(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.execute(
            select(func.count()).select_from(HandlerRun).where(HandlerRun.status == RunStatus.DEAD)
        ).scalar_one()


def parse_run_id(run_id: str) -> tuple[str, str | None]:
    """``evt_x/handler`` names one run; a bare ``evt_x`` names all of that event's dead runs."""
    event_id, _, handler = run_id.partition("/")
    if not event_id.startswith("evt_"):
        raise ValueError(f"{run_id!r} is not a run id (evt_.../handler) or an event id")
    return event_id, handler or None


def reset_for_replay(run: HandlerRun) -> None:
    run.status = RunStatus.PENDING
    run.attempts = 0
    run.leased_until = None
    run.replays = run.replays + 1
    run.next_attempt_at = None
    run.finished_at = None
    run.updated_at = func.now()


def replay_dead(
    sessions: sessionmaker[Session],
    *,
    run_ids: Iterable[str] = (),
    filters: RunFilter | None = None,
    dry_run: bool = False,
    batch_size: int = 500,
    enqueue: Enqueue | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[ListedRun]:
    """Send dead runs back to pending and enqueue them. Named ids, or every dead run matching
    ``filters`` (both may be given: the ids are then also filtered). Returns the runs chosen."""
    wanted = [parse_run_id(run_id) for run_id in run_ids]
    query = _dead_runs_query(filters or RunFilter())
    chosen = []
    with sessions() as session:
        for run, event_type in session.execute(query):
            if wanted and not any(
                run.event_id == event_id and handler in (None, run.handler)
                for event_id, handler in wanted
            ):
                continue
            chosen.append(_row(run, event_type))
    if dry_run:
        return chosen
    # Batches keep each transaction short on a large replay, and let progress be shown.
    for start in range(0, len(chosen), batch_size):
        batch = chosen[start : start + batch_size]
        revived: list[ListedRun] = []
        with transaction(sessions) as session:
            for row in batch:
                locked = lock_run(session, row.event_id, row.handler)
                # Another operator may have replayed it meanwhile.
                if locked is not None and locked.status == RunStatus.DEAD:
                    reset_for_replay(locked)
                    revived.append(row)
        if enqueue:
            for row in revived:
                enqueue(row.event_id, row.handler)
        if progress:
            progress(len(batch))
    return chosen
