"""A redelivery's ingest: the event recorded with its runs already claimed, one attempt counted
for the first delivery that may have died running them, before any handler runs.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.infra.crypto import PayloadCipher
from shared.ledger.event_rows import IngestResult, _record, pending_handlers
from shared.ledger.event_rules import EventScope
from shared.ledger.handlers import HandlerRegistry
from shared.ledger.handlers import registry as default_registry
from shared.ledger.ingest.queue_bodies import queued_event
from shared.ledger.statement_limits import limit_statements


def ingest(
    sessions: sessionmaker[Session],
    body: str,
    source: str,
    cipher: PayloadCipher,
    scope: EventScope,
    *,
    claim_lease: dt.timedelta | None = None,
    uncounted_attempts: int = 0,
    registry: HandlerRegistry = default_registry,
) -> IngestResult:
    """Record a queued event. Raises UndecryptableBody, or EventRefused (never applied).
    With ``claim_lease``, the runs of a newly recorded event come back claimed by the caller
    instead of pending (see ``record_event``), with ``uncounted_attempts`` more counted: a
    redelivered message may follow one whose handlers ran inside a transaction that died
    with its worker (shared.ledger.ingest.first_delivery), so that nothing recorded them."""
    event = scope.check(queued_event(body, cipher))
    with transaction(sessions) as session:
        if claim_lease:
            # A redelivery may wait on the event row of a first delivery whose worker is cut
            # off mid-transaction: bounded, it retries instead of hitting its time limit.
            limit_statements(session, claim_lease)
        recorded = _record(
            session, event, source, cipher, registry, claim_lease, uncounted_attempts
        )
        if recorded is not None and claim_lease:
            return IngestResult(
                recorded.id,
                recorded.type,
                True,
                list(recorded.deferred),
                list(recorded.handlers),
                recorded,
            )
        pending = pending_handlers(session, event["id"])
    return IngestResult(event["id"], event["type"], recorded is not None, pending)
