"""Handlers that exist only in the test worker (loaded through HANDLER_MODULES).

They make failure controllable: ``tests.flaky`` fails transiently a set number of times,
``tests.poisoned`` fails permanently while a poison row exists, and ``tests.effect`` records
that it ran, to show one handler's failure does not hold up another of the same event.
"""

from __future__ import annotations

import os
import signal
import time

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.ledger.handlers import EventView, registry

SLOW_HANDLER_SECONDS = 1.0

TABLES = """
CREATE TABLE IF NOT EXISTS test_handler_calls (
    event_id text NOT NULL, handler text NOT NULL, called_at timestamptz DEFAULT now()
);
CREATE TABLE IF NOT EXISTS test_effects (
    event_id text NOT NULL, handler text NOT NULL, PRIMARY KEY (event_id, handler)
);
CREATE TABLE IF NOT EXISTS test_poison (handler text PRIMARY KEY);
"""


def _count_call(session: Session, event: EventView, handler: str) -> int:
    # On its own connection and committed at once: the handler's transaction may roll back.
    engine = session.get_bind().engine
    with engine.connect() as conn:
        conn.execute(
            text("INSERT INTO test_handler_calls (event_id, handler) VALUES (:e, :h)"),
            {"e": event.id, "h": handler},
        )
        calls = conn.execute(
            text("SELECT count(*) FROM test_handler_calls WHERE event_id = :e AND handler = :h"),
            {"e": event.id, "h": handler},
        ).scalar_one()
        conn.commit()
    return int(calls)


def _effect(session: Session, event: EventView, handler: str) -> None:
    # Idempotent, as real handlers must be: a forced replay applies it again harmlessly.
    session.execute(
        text("INSERT INTO test_effects (event_id, handler) VALUES (:e, :h) ON CONFLICT DO NOTHING"),
        {"e": event.id, "h": handler},
    )


@registry.handles("test.flaky", name="tests.flaky")
def flaky(session: Session, event: EventView) -> None:
    calls = _count_call(session, event, "tests.flaky")
    if calls <= int(event.object.get("fail_times", 0)):
        raise ConnectionError(f"simulated outage, call {calls}")
    _effect(session, event, "tests.flaky")


@registry.handles("test.poison", name="tests.poisoned")
def poisoned(session: Session, event: EventView) -> None:
    _count_call(session, event, "tests.poisoned")
    poisoned_now = session.execute(
        text("SELECT 1 FROM test_poison WHERE handler = 'tests.poisoned'")
    ).scalar()
    if poisoned_now:
        # The message carries a fake key: the stored error must show it masked.
        raise ValueError(
            "cannot read this payload (configured key sk_test_4eC39HqLyjWDarjtT1zdp7dc)"
        )
    _effect(session, event, "tests.poisoned")


@registry.handles("test.crash", name="tests.crashing")
def crashing(session: Session, event: EventView) -> None:
    _count_call(session, event, "tests.crashing")
    # The worst a handler can do: take its worker process down with it, every time.
    os.kill(os.getpid(), signal.SIGKILL)


@registry.handles("test.crash_once", name="tests.crashing_once")
def crashing_once(session: Session, event: EventView) -> None:
    # Takes its worker process down on its first call only: the redelivery then succeeds.
    if _count_call(session, event, "tests.crashing_once") == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    _effect(session, event, "tests.crashing_once")


@registry.handles("test.slow", name="tests.slow")
def slow(session: Session, event: EventView) -> None:
    # A handler that takes a while: while it runs, what arrives behind it is held for a batch.
    time.sleep(SLOW_HANDLER_SECONDS)
    _effect(session, event, "tests.slow")


@registry.handles("test.poison", "test.flaky", name="tests.effect")
def effect(session: Session, event: EventView) -> None:
    _count_call(session, event, "tests.effect")
    _effect(session, event, "tests.effect")


@registry.handles("test.outbox", name="tests.outbox")
def outbox(session: Session, event: EventView) -> None:
    """Asks for a receipt email and an HTTP notice; then fails, when told to, after asking."""
    assert event.effects is not None
    obj = event.object
    event.effects.email("receipt", obj["to"], f"Receipt for {obj['id']}", "Thank you.")
    event.effects.http("notice", obj["url"], {"object": obj["id"]})
    if obj.get("fail_after_asking"):
        raise ValueError("failed after asking for its effects")


@registry.handles("test.versioned", name="tests.versioned", api_versions=("2026-10-28.endive",))
def versioned(session: Session, event: EventView) -> None:
    """Reads only 2026-10-28.endive's payloads: an event of another version is held for it."""
    _effect(session, event, "tests.versioned")
