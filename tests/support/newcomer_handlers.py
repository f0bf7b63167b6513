"""A handler for an event type none of ours handles: `payments webhook register` and
`payments doctor` must pick it up from the registry (loaded through HANDLER_MODULES)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shared.ledger.handlers.registry import EventView, registry

NEW_EVENT_TYPE = "customer.created"


@registry.handles(NEW_EVENT_TYPE, name="tests.customer_seen")
def customer_seen(session: Session, event: EventView) -> None:
    """Nothing to do: only the subscription it asks for matters here."""
