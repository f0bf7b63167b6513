"""Retention: forgetting the events whose every run is over, once Stripe has forgotten them too.

``stripe_events`` and ``handler_runs`` would otherwise grow for ever. An event is pruned with its
runs (the foreign key cascades) when it was received before the horizon and none of its runs is
pending (work still owed) or dead (an operator's to look at). Events without runs go too.

The horizon has a floor. Our event row is what makes a second delivery a duplicate: pruned while
Stripe can still send it (webhook retries for three days, ``GET /v1/events`` for thirty, which the
reconciler and ``--since`` read), it would be taken for new and applied again. So nothing younger
than Stripe's thirty days plus a day, or than the reconciler's own lookback, is ever pruned.

Two more tables are trimmed, and nothing else: a payment is the ledger and is kept for ever.
A create-payment claim that never got a PaymentIntent (Stripe refused it, or its request died)
goes once its lease is over and Stripe's 24-hour idempotency window has passed: after that a
retry with its key could not replay anything at Stripe either. A checkout session goes once it
expired before the events' horizon; its payments keep its id.

Deleted in batches, each its own short transaction, skipping rows another transaction holds:
pruning never blocks ingest or the sweeper for long, and can stop and resume anywhere.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Delete,
    Result,
    and_,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.models import (
    CheckoutSession,
    HandlerRun,
    Payment,
    RunStatus,
    StripeEvent,
    WorkerCanary,
)

# Stripe lists events for 30 days; one more day covers clocks and a delivery in flight.
STRIPE_EVENT_DAYS = 30
MIN_RETENTION = dt.timedelta(days=STRIPE_EVENT_DAYS + 1)
DEFAULT_BATCH = 5000
# A canary row only matters while `payments worker-check` waits for it.
CANARY_RETENTION = dt.timedelta(days=1)
# Stripe keeps an idempotency key at least 24 hours; an hour more covers a request in flight.
ABANDONED_CLAIM_AGE = dt.timedelta(hours=25)


class RetentionTooShort(ValueError):
    """The horizon would prune events Stripe may still deliver or list."""


@dataclass(frozen=True)
class PruneResult:
    horizon: dt.datetime
    events: int
    canaries: int
    abandoned_claims: int = 0
    checkout_sessions: int = 0


def minimum_retention(reconcile_lookback_seconds: int) -> dt.timedelta:
    return max(MIN_RETENTION, dt.timedelta(seconds=reconcile_lookback_seconds, days=1))


def check_retention(older_than: dt.timedelta, reconcile_lookback_seconds: int) -> None:
    floor = minimum_retention(reconcile_lookback_seconds)
    if older_than < floor:
        raise RetentionTooShort(
            f"events younger than {floor.days} days may still arrive from Stripe (or from the "
            "reconciler) and would be applied again once forgotten; keep them at least that long"
        )


def _prunable(horizon: dt.datetime) -> ColumnElement[bool]:
    """Received before the horizon, and no run of it left pending or dead."""
    owed = exists().where(
        and_(
            HandlerRun.event_id == StripeEvent.id,
            HandlerRun.status.in_((RunStatus.PENDING, RunStatus.DEAD, RunStatus.HELD)),
        )
    )
    return and_(StripeEvent.received_at < horizon, ~owed)


def count_prunable(sessions: sessionmaker[Session], horizon: dt.datetime) -> int:
    with sessions() as session:
        query = select(func.count()).select_from(StripeEvent).where(_prunable(horizon))
        return int(session.execute(query).scalar_one())


def horizon_for(older_than: dt.timedelta, now: dt.datetime | None = None) -> dt.datetime:
    return (now or dt.datetime.now(dt.UTC)) - older_than


def prune(
    sessions: sessionmaker[Session],
    older_than: dt.timedelta,
    reconcile_lookback_seconds: int,
    *,
    batch: int = DEFAULT_BATCH,
    now: dt.datetime | None = None,
) -> PruneResult:
    """Delete the events (and their runs) received before ``now - older_than`` whose runs are
    all done. Raises RetentionTooShort below the floor."""
    check_retention(older_than, reconcile_lookback_seconds)
    horizon = horizon_for(older_than, now)
    events = 0
    while True:
        with transaction(sessions) as session:
            deleted = prune_batch(session, horizon, batch)
        events += deleted
        if deleted < batch:
            break
    with transaction(sessions) as session:
        result = session.execute(
            delete(WorkerCanary).where(WorkerCanary.created_at < horizon_for(CANARY_RETENTION, now))
        )
    return PruneResult(
        horizon,
        events,
        _rowcount(result),
        abandoned_claims=_prune_in_batches(sessions, _abandoned_claims(now), batch),
        checkout_sessions=_prune_in_batches(sessions, _ended_sessions(horizon), batch),
    )


def _abandoned_claims(now: dt.datetime | None) -> Delete:
    """Claims with no PaymentIntent, their lease over, older than Stripe's key window."""
    cutoff = horizon_for(ABANDONED_CLAIM_AGE, now)
    claims = (
        select(Payment.id)
        .where(
            Payment.payment_intent_id.is_(None),
            Payment.created_at < cutoff,
            or_(Payment.create_lease_until.is_(None), Payment.create_lease_until < cutoff),
        )
        .with_for_update(skip_locked=True)
    )
    return delete(Payment).where(Payment.id.in_(claims.limit(bindparam("batch")).scalar_subquery()))


def _ended_sessions(horizon: dt.datetime) -> Delete:
    ended = (
        select(CheckoutSession.id)
        .where(CheckoutSession.expires_at < horizon, ~CheckoutSession.cancel_pending)
        .with_for_update(skip_locked=True)
    )
    return delete(CheckoutSession).where(
        CheckoutSession.id.in_(ended.limit(bindparam("batch")).scalar_subquery())
    )


def _prune_in_batches(sessions: sessionmaker[Session], statement: Delete, batch: int) -> int:
    total = 0
    while True:
        with transaction(sessions) as session:
            deleted = _rowcount(session.execute(statement, {"batch": batch}))
        total += deleted
        if deleted < batch:
            return total


def prune_batch(session: Session, horizon: dt.datetime, batch: int) -> int:
    """One batch, oldest first, skipping rows a running transaction holds (an ingest, a
    replay). Returns how many events went (their runs with them)."""
    batch_ids = (
        select(StripeEvent.id)
        .where(_prunable(horizon))
        .order_by(StripeEvent.received_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return _rowcount(session.execute(delete(StripeEvent).where(StripeEvent.id.in_(batch_ids))))


def _rowcount(result: Result[Any]) -> int:
    return int(getattr(result, "rowcount", 0))
