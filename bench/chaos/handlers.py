"""Handlers the chaos suite adds to the workers (through HANDLER_MODULES).

``chaos.effect`` runs for every event the suite sends and records its effect twice over: in
``chaos_effects``, one row per (event, handler), and in ``chaos_execution_log``, one row per
committed execution. A double application shows as two log rows; it cannot hide behind the
unique key. ``chaos.poisoned`` fails permanently while ``chaos_control`` holds the poison.
Both ask for a side effect first (an HTTP call to the suite's endpoint, CHAOS_EFFECTS_URL):
the poisoned one's is rolled back with its run until the replay (bench.chaos.effects).
"""

from __future__ import annotations

import os

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.ledger.handlers import EventView, registry
from shared.payments.handlers.intents import PAYMENT_INTENT_EVENTS
from shared.payments.handlers.refunds_disputes import DISPUTE_EVENTS, REFUND_EVENTS

POISON_EVENT = "chaos.poison"

TABLES = """
CREATE TABLE IF NOT EXISTS chaos_effects (
    event_id text NOT NULL, handler text NOT NULL, PRIMARY KEY (event_id, handler)
);
CREATE TABLE IF NOT EXISTS chaos_execution_log (
    id bigserial PRIMARY KEY, event_id text NOT NULL, handler text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS chaos_control (name text PRIMARY KEY);
"""


def _notify(event: EventView, handler: str) -> None:
    url = os.environ.get("CHAOS_EFFECTS_URL")
    if url and event.effects is not None:
        event.effects.http("notify", url, {"event": event.id, "handler": handler})


def _apply(session: Session, event: EventView, handler: str) -> None:
    session.execute(
        text(
            "INSERT INTO chaos_effects (event_id, handler) VALUES (:e, :h) ON CONFLICT DO NOTHING"
        ),
        {"e": event.id, "h": handler},
    )
    session.execute(
        text("INSERT INTO chaos_execution_log (event_id, handler) VALUES (:e, :h)"),
        {"e": event.id, "h": handler},
    )


@registry.handles(
    *PAYMENT_INTENT_EVENTS,
    *REFUND_EVENTS,
    "charge.refunded",
    *DISPUTE_EVENTS,
    POISON_EVENT,
    name="chaos.effect",
)
def effect(session: Session, event: EventView) -> None:
    _notify(event, "chaos.effect")
    _apply(session, event, "chaos.effect")


@registry.handles(POISON_EVENT, name="chaos.poisoned")
def poisoned(session: Session, event: EventView) -> None:
    _notify(event, "chaos.poisoned")
    if session.execute(text("SELECT 1 FROM chaos_control WHERE name = 'poison'")).scalar():
        raise ValueError("poisoned handler: cannot process this event")
    _apply(session, event, "chaos.poisoned")
