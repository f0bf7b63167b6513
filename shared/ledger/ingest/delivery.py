"""Ingesting one delivery of the events queue, the first time or again: the one place that
chooses between the two ways.

A first delivery records the event and applies its handlers in one transaction
(``first_delivery``). A redelivery may follow a worker killed by a handler: it goes the slower
way, which counts every attempt before running any handler (``redelivery.ingest``, then
``runs.apply.apply_claimed_runs``). The worker's task only says which it is and translates the
answer: the runs to send, and the retries of those that failed.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy.orm import Session, sessionmaker

from shared.infra.crypto import PayloadCipher
from shared.infra.stripe_gateway import PaymentIntentReader
from shared.ledger.event_rows import IngestResult, RecordedEvent
from shared.ledger.event_rules import EventScope
from shared.ledger.handlers import HandlerRegistry
from shared.ledger.ingest.first_delivery import ingest_first_delivery
from shared.ledger.ingest.redelivery import ingest
from shared.ledger.retry import Retry, RetryPolicy
from shared.ledger.runs.apply import apply_claimed_runs

log = logging.getLogger(__name__)


def ingest_delivery(
    sessions: sessionmaker[Session],
    body: str,
    source: str,
    *,
    redelivered: bool,
    cipher: PayloadCipher,
    scope: EventScope,
    stripe: PaymentIntentReader,
    policy: RetryPolicy,
    registry: HandlerRegistry,
) -> tuple[IngestResult, dict[str, Retry]]:
    """Record the event and apply its runs: the runs that failed come back with their retry."""
    if not redelivered:
        result, outcome = ingest_first_delivery(
            sessions, body, source, cipher, scope, stripe, policy, registry=registry
        )
        return result, outcome.retries
    # The first delivery's attempt died uncommitted, if it ran: count it now.
    lease = dt.timedelta(seconds=policy.lease_seconds)
    result = ingest(
        sessions,
        body,
        source,
        cipher,
        scope,
        claim_lease=lease,
        uncounted_attempts=1,
        registry=registry,
    )
    if result.recorded is None or not result.claimed_handlers:
        return result, {}
    return result, _apply_claimed(
        sessions, result.recorded, result.claimed_handlers, stripe, policy, registry
    )


def _apply_claimed(
    sessions: sessionmaker[Session],
    event: RecordedEvent,
    handlers: list[str],
    stripe: PaymentIntentReader,
    policy: RetryPolicy,
    registry: HandlerRegistry,
) -> dict[str, Retry]:
    """Apply the runs ingest claimed; each one that failed goes on as a task of its own."""
    try:
        outcome = apply_claimed_runs(sessions, event, handlers, stripe, policy, registry=registry)
    except Exception:
        # Still pending and leased to us: a task takes each over once the lease ends (and
        # the sweeper, should this enqueue be lost too).
        log.exception("could not apply the runs of %s; handing them to handler tasks", event.id)
        return dict.fromkeys(handlers, policy.while_leased())
    return outcome.retries
