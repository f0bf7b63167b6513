"""A handler stuck for STUCK_SECONDS on a queue of its own, beside a ledger handler of the same
event type (loaded through HANDLER_MODULES by tests/integration/test_handler_queues.py's own
workers only: its queue needs HANDLER_QUEUES and a worker of its own)."""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.ledger.handlers import EventView, registry

STUCK_SECONDS = 30
STUCK_QUEUE = "tests-slow"


def _effect(session: Session, event: EventView, handler: str) -> None:
    session.execute(
        text("INSERT INTO test_effects (event_id, handler) VALUES (:e, :h) ON CONFLICT DO NOTHING"),
        {"e": event.id, "h": handler},
    )


@registry.handles("test.stuck", name="tests.stuck_beside")
def beside(session: Session, event: EventView) -> None:
    _effect(session, event, "tests.stuck_beside")


@registry.handles("test.stuck", name="tests.stuck", queue=STUCK_QUEUE, time_limit_seconds=60)
def stuck(session: Session, event: EventView) -> None:
    time.sleep(STUCK_SECONDS)
    _effect(session, event, "tests.stuck")
