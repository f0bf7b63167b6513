"""A worker that cannot reach its database stops taking work until it can again.

Cut off from PostgreSQL with its broker still answering, a worker would go on taking messages
and failing each one (a connect timeout, then a retry sent back to the broker that the same
worker may take again): a black hole that delays every event it touches while other hosts sit
idle. A thread of its own opens a fresh, bounded connection every ``interval_seconds``; when
one fails, the worker stops consuming its queues (its work in hand fails as transient and goes
back to the broker for the others), and when one succeeds again, it consumes them again. No
restart: a database that is down for every worker pauses them all and resumes them all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg2
from celery import Celery
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

# How often the watch looks, and how long one look may take (connect, then one statement).
PROBE_INTERVAL_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 5
# How long the worker's own event loop may take to confirm it stopped or started a queue.
CONTROL_REPLY_SECONDS = 3.0


class DatabaseWatch:
    def __init__(
        self,
        probe: Callable[[], None],
        pause: Callable[[], bool],
        resume: Callable[[], bool],
        *,
        interval_seconds: float = PROBE_INTERVAL_SECONDS,
    ) -> None:
        self._probe = probe
        self._pause = pause
        self._resume = resume
        self._interval = interval_seconds
        self.paused = False
        self._pause_confirmed = False
        self._resume_asked = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="database-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> None:
        """One probe. A switch the worker did not confirm is asked again at the next probe: its
        reply may be lost while the command itself went through, so once a pause was asked the
        worker is treated as paused until a resume is confirmed (both are idempotent)."""
        try:
            self._probe()
        except Exception as exc:  # noqa: BLE001 - any failure to reach the database counts
            if not self.paused:
                log.warning(
                    "database unreachable (%s): this worker takes no work until it answers",
                    _first_line(exc),
                )
            if not (self.paused and self._pause_confirmed):
                self._pause_confirmed = self._pause()
            self.paused = True
            return
        if self.paused:
            if not self._resume_asked:
                log.warning("database reachable again: this worker takes work again")
            self._resume_asked = True
            if self._resume():
                self.paused = self._pause_confirmed = self._resume_asked = False

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def database_probe(database_url: str) -> Callable[[], None]:
    """A fresh connection and one ``SELECT 1``, each bounded whatever the network does."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)

    def probe() -> None:
        connection = psycopg2.connect(
            dsn,
            connect_timeout=PROBE_TIMEOUT_SECONDS,
            tcp_user_timeout=PROBE_TIMEOUT_SECONDS * 1000,
            options=f"-c statement_timeout={PROBE_TIMEOUT_SECONDS * 1000}",
            application_name="payments-database-watch",
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            connection.close()

    return probe


class QueueSwitch:
    """Stops and starts a worker's consumption of its queues through its own remote control,
    so the worker's event loop does it (the Celery way, as `celery control cancel_consumer`)."""

    def __init__(self, app: Celery, hostname: str) -> None:
        self._app = app
        self._hostname = hostname
        self._queues: list[str] = []

    def pause(self) -> bool:
        self._queues = self._queues or sorted(self._app.amqp.queues.consume_from or [])
        return self._each(self._app.control.cancel_consumer)

    def resume(self) -> bool:
        return self._each(self._app.control.add_consumer)

    def _each(self, command: Callable[..., Any]) -> bool:
        try:
            return all(
                command(
                    queue,
                    destination=[self._hostname],
                    reply=True,
                    timeout=CONTROL_REPLY_SECONDS,
                )
                for queue in self._queues
            )
        except Exception:  # the broker may be out of reach too: ask again later
            log.exception("could not switch this worker's queues")
            return False
