"""An event of an API version its handler does not read is held, on the real receiver, worker
and ledger: not applied, listed by `payments events held`, and applied once released by
`payments events release`; an event of a version the handler reads is applied at once."""

from __future__ import annotations

import os

from sqlalchemy import select

from devtools import stripe_events
from devtools.processes import REPO_ROOT, run_payments, wait_until
from shared.models import HandlerRun
from tests.conftest import WEBHOOK_SECRET


def send(api, version: str) -> str:
    event = stripe_events.event(
        "test.versioned", {"id": stripe_events.new_id("obj"), "object": "test"}
    ) | {"api_version": version}
    assert api.post_webhook(*stripe_events.signed(event, WEBHOOK_SECRET)).status_code == 200
    return str(event["id"])


def status(sessions, event_id: str) -> str | None:
    with sessions() as session:
        run = session.scalars(
            select(HandlerRun).where(
                HandlerRun.event_id == event_id, HandlerRun.handler == "tests.versioned"
            )
        ).one_or_none()
        return run.status if run else None


def test_an_event_of_an_unread_version_is_held_then_released(api, sessions, worker, base_env):
    env = {**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT)}
    read = send(api, "2026-10-28.endive")
    unread = send(api, "2025-10-29.clover")
    wait_until(lambda: status(sessions, read) == "done", 20, "the readable event applied")
    wait_until(lambda: status(sessions, unread) == "held", 20, "the other one held")

    listed = run_payments("events", "held", env=env)
    assert listed.returncode == 0, listed.stderr
    (line,) = [line for line in listed.stdout.splitlines() if unread in line]
    assert "2025-10-29.clover" in line and "tests.versioned" in line
    assert read not in listed.stdout

    released = run_payments("events", "release", unread, env=env)
    assert released.returncode == 0 and "1 held run(s) released" in released.stdout
    wait_until(lambda: status(sessions, unread) == "done", 20, "the released run applied")
    again = run_payments("events", "release", unread, env=env)
    assert "0 held run(s) released" in again.stdout
