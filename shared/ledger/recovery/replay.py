"""Re-running an event's handlers on an operator's word, fetching from Stripe an event never
received.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.infra.crypto import PayloadCipher
from shared.ledger.event_rows import EventNotFound, record_event
from shared.ledger.event_rules import EventScope
from shared.ledger.handlers import HandlerRegistry
from shared.ledger.handlers import registry as default_registry
from shared.ledger.recovery.dead_letters import Enqueue, reset_for_replay
from shared.ledger.runs.rows import lock_run
from shared.models import HandlerRun, RunStatus, StripeEvent
from shared.observability.metrics import EVENTS_REFUSED


def replay_event(
    sessions: sessionmaker[Session],
    event_id: str,
    *,
    cipher: PayloadCipher,
    handler: str | None = None,
    fetch_event: Callable[[str], dict[str, Any]] | None = None,
    enqueue: Enqueue | None = None,
    scope: EventScope | None = None,
    registry: HandlerRegistry = default_registry,
) -> list[str]:
    """Re-run an event's handlers. Returns the handler names enqueued.

    With ``handler``: that handler runs again even if it already finished (the operator asked for
    it). Without: every registered handler that has not finished runs, including handlers added
    since the event arrived. An event we never received is fetched from Stripe first (source
    ``replay``) when ``fetch_event`` is given, and recorded only if ``scope`` accepts it (raises
    EventRefused otherwise). Without ``scope`` a fetched event is not checked: every caller
    should pass one.
    """
    if handler is not None:
        registry.get(handler)  # raises UnknownHandler for a typo, before anything changes
    with transaction(sessions) as session:
        event = session.get(StripeEvent, event_id)
        if event is None:
            if fetch_event is None:
                raise EventNotFound(event_id)
            fetched = _fetched_in_scope(fetch_event, event_id, scope)
            record_event(session, fetched, "replay", cipher, registry=registry)
            event = session.get(StripeEvent, event_id)
            assert event is not None
        names = [handler] if handler else registry.handlers_for(event.type)
        to_run = []
        for name in names:
            run = lock_run(session, event_id, name)
            if run is None:
                session.add(HandlerRun(event_id=event_id, handler=name, status=RunStatus.PENDING))
                to_run.append(name)
            elif run.status == RunStatus.DEAD or (
                handler is not None and run.status == RunStatus.DONE
            ):
                reset_for_replay(run)
                to_run.append(name)
            elif run.status == RunStatus.PENDING:
                to_run.append(name)
    if enqueue:
        for name in to_run:
            enqueue(event_id, name)
    return to_run


def _fetched_in_scope(
    fetch_event: Callable[[str], dict[str, Any]], event_id: str, scope: EventScope | None
) -> dict[str, Any]:
    event = fetch_event(event_id)
    refused = scope.refusal(event) if scope is not None else None
    if refused is not None:
        # What Stripe answers passes the same check as what it delivers.
        EVENTS_REFUSED.labels(reason=refused.code, stage="replay").inc()
        raise refused
    return event
