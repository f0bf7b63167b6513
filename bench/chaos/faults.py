"""The faults the chaos suite injects: worker and broker SIGKILLs, a PostgreSQL stop, the poison."""

from __future__ import annotations

import threading
import time

from sqlalchemy import create_engine, text

from bench.chaos.stack import Stack
from shared.config import load_settings


def faults(stack: Stack, duration: float, stop: threading.Event, record: list[str]) -> None:
    """The fault schedule, as fractions of the load's duration."""
    schedule: list[tuple[float, str]] = [
        (0.10, "kill-worker"),
        (0.25, "break-broker"),
        (0.40, "kill-worker"),
        (0.50, "stop-postgres"),
        (0.80, "kill-worker"),
        (0.90, "break-broker"),
    ]
    started = time.monotonic()
    for at, fault in schedule:
        while time.monotonic() < started + at * duration:
            if stop.wait(0.2):
                return
        if fault == "kill-worker":
            record.append(f"{time.monotonic() - started:5.1f}s SIGKILL worker and children")
            stack.kill_and_restart_worker(2)
        elif fault == "break-broker":
            at_seconds = time.monotonic() - started
            record.append(f"{at_seconds:5.1f}s {stack.broker.break_once()}")
        elif fault == "stop-postgres":
            stack.postgres.stop()
            record.append(f"{time.monotonic() - started:5.1f}s stop postgres for 20s")
            time.sleep(20)
            stack.postgres.start()


class Poison:
    """The poisoned handler fails while inside this block."""

    def __init__(self, stack: Stack) -> None:
        self.url = load_settings(stack.env).database_url

    def _set(self, on: bool) -> None:
        engine = create_engine(self.url)
        with engine.begin() as conn:
            if on:
                conn.execute(
                    text("INSERT INTO chaos_control VALUES ('poison') ON CONFLICT DO NOTHING")
                )
            else:
                conn.execute(text("DELETE FROM chaos_control WHERE name = 'poison'"))
        engine.dispose()

    def __enter__(self) -> None:
        self._set(True)

    def __exit__(self, *exc: object) -> None:
        self._set(False)
