"""The reconciler: recover events Stripe has but we never recorded.

Stripe's webhook delivery can leave gaps (a Redis crash after we answered 2xx, a message lost in
flight, a delivery Stripe gave up on). The Events API is the source of truth for the last 30 days:
list everything since our checkpoint minus an overlap, and ingest what we do not have.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import stripe
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared.config import STRIPE_EVENTS_RETENTION_SECONDS
from shared.db import transaction
from shared.infra.crypto import PayloadCipher
from shared.infra.timeutil import utc_from_timestamp
from shared.ledger.event_rows import EventNotFound, pending_runs, record_event
from shared.ledger.event_rules import EventScope
from shared.ledger.handlers import HandlerRegistry
from shared.ledger.handlers import registry as default_registry
from shared.models import ReconcileCheckpoint, StripeEvent
from shared.observability.metrics import EVENTS_REFUSED, RECONCILE_LAST_SUCCESS, RECONCILE_RECOVERED

if TYPE_CHECKING:
    from shared.runtime import Runtime

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "stripe-events"
PAGE_SIZE = 100
# One reconciler at a time across all machines; a second one skips instead of doing it twice.
ADVISORY_LOCK_KEY = 7428873002


class EventSource(Protocol):
    def events_since(self, created_gte: int) -> Iterable[dict[str, Any]]: ...


class StripeEventSource:
    """Pages through ``GET /v1/events`` with ``created[gte]`` and ``starting_after``.

    Real Stripe lists newest first; the stand-in lists oldest first. Paging by ``starting_after``
    the last id seen is correct for both, and the caller sorts what it gets.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def events_since(self, created_gte: int) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {"created": {"gte": created_gte}, "limit": PAGE_SIZE}
        while True:
            page = self._client.v1.events.list(params=params)
            data = [event.to_dict() for event in page.data]
            yield from data
            if not page.has_more or not data:
                return
            params["starting_after"] = data[-1]["id"]

    def retrieve(self, event_id: str) -> dict[str, Any]:
        try:
            event: dict[str, Any] = self._client.v1.events.retrieve(event_id).to_dict()
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                raise EventNotFound(event_id) from None
            raise
        return event


@dataclass(frozen=True)
class ReconcileResult:
    since: dt.datetime
    listed: int
    recovered: int
    # (event id, handler) runs created for recovered events; the caller enqueues them.
    pending_runs: list[tuple[str, str]]
    skipped: bool = False


def reconcile_with_stripe(rt: Runtime, *, since: dt.datetime | None = None) -> ReconcileResult:
    """One pass over Stripe's own list of events, with the runtime's settings: as beat runs it
    (workers.tasks) and as an operator does (``payments reconcile``). The caller enqueues the
    runs it returns."""
    return reconcile(
        rt.sessions,
        StripeEventSource(rt.stripe_client),
        overlap_seconds=rt.settings.reconcile_overlap_seconds,
        lookback_seconds=rt.settings.reconcile_lookback_seconds,
        cipher=rt.cipher,
        scope=rt.scope,
        since=since,
        registry=rt.registry,
    )


def reconcile(
    sessions: sessionmaker[Session],
    source: EventSource,
    *,
    overlap_seconds: int,
    lookback_seconds: int,
    cipher: PayloadCipher,
    scope: EventScope,
    since: dt.datetime | None = None,
    now: Callable[[], float] = time.time,
    registry: HandlerRegistry = default_registry,
) -> ReconcileResult:
    started = now()
    with sessions() as lock_session:
        # A session-level advisory lock, held for the whole pass on this connection.
        got_lock = lock_session.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
        ).scalar_one()
        if not got_lock:
            log.info("another reconciler is running; skipping this pass")
            return ReconcileResult(utc_from_timestamp(started), 0, 0, [], skipped=True)
        try:
            return _reconcile_locked(
                sessions,
                source,
                _Pass(
                    cipher, scope, registry, overlap_seconds, lookback_seconds, since, started, now
                ),
            )
        finally:
            lock_session.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
            lock_session.commit()


@dataclass(frozen=True)
class _Pass:
    cipher: PayloadCipher
    scope: EventScope
    registry: HandlerRegistry
    overlap_seconds: int
    lookback_seconds: int
    since: dt.datetime | None
    started: float
    now: Callable[[], float]


def _start_from(sessions: sessionmaker[Session], run: _Pass) -> dt.datetime:
    since = run.since
    if since is None:
        with sessions() as session:
            checkpoint = session.get(ReconcileCheckpoint, CHECKPOINT_NAME)
        if checkpoint is None:
            since = utc_from_timestamp(run.started - run.lookback_seconds)
        else:
            since = checkpoint.last_event_created - dt.timedelta(seconds=run.overlap_seconds)
    oldest_listable = utc_from_timestamp(run.started - STRIPE_EVENTS_RETENTION_SECONDS + 60)
    if since < oldest_listable:
        log.warning("Stripe lists only 30 days of events; reconciling from %s", oldest_listable)
        since = oldest_listable
    return since


def _reconcile_locked(
    sessions: sessionmaker[Session], source: EventSource, run: _Pass
) -> ReconcileResult:
    since = _start_from(sessions, run)

    events = sorted(
        source.events_since(int(since.timestamp())), key=lambda e: (e["created"], e["id"])
    )
    recovered = 0
    pending: list[tuple[str, str]] = []
    failed = False
    # Oldest first, in small transactions: a crash part-way keeps what was recovered.
    for start in range(0, len(events), PAGE_SIZE):
        with transaction(sessions) as session:
            batch = events[start : start + PAGE_SIZE]
            outcome = _record_batch(session, batch, run)
            recovered += outcome.recovered
            pending += outcome.pending_runs
            # Never past an event we could not record: every later pass must list it again,
            # until it is recorded or an operator sees the stale-reconciler alert.
            if not failed and outcome.recorded_through is not None:
                _save_checkpoint(session, utc_from_timestamp(outcome.recorded_through))
        failed = failed or outcome.failed
    if recovered:
        RECONCILE_RECOVERED.inc(recovered)
    if not failed:
        RECONCILE_LAST_SUCCESS.set(run.now())
    log.info(
        "reconciled since %s: %d listed, %d recovered%s",
        since.isoformat(),
        len(events),
        recovered,
        "; an event could not be recorded, checkpoint held before it" if failed else "",
    )
    return ReconcileResult(since, len(events), recovered, pending)


@dataclass(frozen=True)
class _BatchOutcome:
    recovered: int
    pending_runs: list[tuple[str, str]]
    # ``created`` of the last event before the first one that could not be recorded.
    recorded_through: int | None
    failed: bool


def recorded_ids(session: Session, event_ids: list[str]) -> set[str]:
    """Which of a page of listed events we have recorded already."""
    return set(
        session.execute(select(StripeEvent.id).where(StripeEvent.id.in_(event_ids))).scalars()
    )


def _record_batch(session: Session, batch: list[dict[str, Any]], run: _Pass) -> _BatchOutcome:
    known = recorded_ids(session, [e["id"] for e in batch])
    recovered = 0
    recorded_through: int | None = None
    failed = False
    for event in batch:
        if event["id"] not in known:
            result = _record_listed(session, event, run)
            recovered += result == "recorded"
            failed = failed or result == "failed"
        if not failed:
            recorded_through = event["created"]
    new_ids = [e["id"] for e in batch if e["id"] not in known]
    pending = [
        (event_id, handler)
        for event_id, handlers in pending_runs(session, new_ids).items()
        for handler in handlers
    ]
    return _BatchOutcome(recovered, pending, recorded_through, failed)


def _record_listed(session: Session, event: dict[str, Any], run: _Pass) -> str:
    """Record one listed event: "recorded", "known" (recorded meanwhile), "refused" (out of
    scope, on purpose never recorded) or "failed"."""
    refused = run.scope.refusal(event)
    if refused is not None:
        # Listed again by every pass whose window holds it, and counted each time.
        EVENTS_REFUSED.labels(reason=refused.code, stage="reconcile").inc()
        log.warning("reconcile refused event %s: %s", refused.event_id, refused.code)
        return "refused"
    try:
        # One event we cannot store must not stop the pass for every event after it.
        with session.begin_nested():
            stored = record_event(session, event, "reconcile", run.cipher, registry=run.registry)
    except (DataError, IntegrityError, KeyError, TypeError, ValueError):
        log.exception("reconcile could not record event %s", event.get("id"))
        return "failed"
    if not stored:
        return "known"
    log.info("recovered event %s (%s)", event["id"], event["type"])
    return "recorded"


def _save_checkpoint(session: Session, newest: dt.datetime) -> None:
    statement = insert(ReconcileCheckpoint).values(name=CHECKPOINT_NAME, last_event_created=newest)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[ReconcileCheckpoint.name],
            # Never move the checkpoint backwards (an on-demand run with an old --since).
            set_={
                "last_event_created": statement.excluded.last_event_created,
                "updated_at": dt.datetime.now(dt.UTC),
            },
            where=ReconcileCheckpoint.last_event_created < statement.excluded.last_event_created,
        )
    )
