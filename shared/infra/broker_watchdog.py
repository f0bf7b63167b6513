"""A worker that cannot reach its broker exits, so its supervisor starts it again.

On Redis a worker cut off from its broker freezes: its heartbeat publish retries for ever inside
the event loop (celery#4804), so it logs nothing, fetches nothing and its time limits wait for
the link to come back. A thread of its own, outside that loop, opens a fresh connection to the
broker every ``interval_seconds`` with short timeouts; when none has succeeded for
``bound_seconds`` it says so in one line and ends the process with a non-zero status. What the
worker held unacknowledged goes back to the queue (late acknowledgement), as after any crash.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from celery import Celery

log = logging.getLogger(__name__)

# The exit status of a worker that gave up on its broker (sysexits' EX_UNAVAILABLE).
EXIT_BROKER_UNREACHABLE = 69


class BrokerWatchdog:
    def __init__(
        self,
        probe: Callable[[], None],
        *,
        bound_seconds: float,
        interval_seconds: float,
        exit: Callable[[int], None] = os._exit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._bound = bound_seconds
        self._interval = interval_seconds
        self._exit = exit
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="broker-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def check(self, last_reached: float) -> float:
        """One probe: when the broker was last reached, now if this probe reached it. Ends the
        process once that is longer ago than the bound."""
        try:
            self._probe()
        except Exception as exc:  # noqa: BLE001 - any failure to reach the broker counts
            unreachable = self._clock() - last_reached
            if unreachable >= self._bound:
                log.critical(
                    "broker unreachable for %.0f s (bound %.0f s): exiting so the supervisor "
                    "restarts this worker; last error: %s",
                    unreachable,
                    self._bound,
                    exc,
                )
                self._exit(EXIT_BROKER_UNREACHABLE)
            return last_reached
        return self._clock()

    def _watch(self) -> None:
        last_reached = self._clock()
        while not self._stop.wait(self._interval):
            last_reached = self.check(last_reached)


# How often the watchdog looks, and how long one look may take.
PROBE_INTERVAL_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 5.0


def broker_probe(app: Celery) -> Callable[[], None]:
    """A fresh connection to the app's broker, a channel opened on it (on Redis, a PING), and
    closed again. A broker of several nodes (or sentinels) is reached if any one answers: each
    is tried in turn with its own timeout, so a dead first node cannot hide the live ones (the
    worker itself fails over to them)."""
    urls = _broker_urls(app)

    def probe() -> None:
        *others, last = urls
        for url in others:
            try:
                _reach(app, url)
            except Exception:  # noqa: BLE001, S112 - the next node may answer
                continue
            return
        _reach(app, last)

    return probe


def _broker_urls(app: Celery) -> list[str]:
    with app.connection_for_write() as connection:
        return list(connection.alt) or [connection.as_uri(include_password=True)]


def _reach(app: Celery, url: str) -> None:
    # Whatever the app's own options say: a probe that could wait for ever would never report.
    bounded = {
        "socket_connect_timeout": PROBE_TIMEOUT_SECONDS,
        "socket_timeout": PROBE_TIMEOUT_SECONDS,
    }
    options = {**(app.conf.broker_transport_options or {}), **bounded}
    with app.connection_for_write(
        url=url, connect_timeout=PROBE_TIMEOUT_SECONDS, transport_options=options
    ) as connection:
        connection.ensure_connection(max_retries=1, timeout=PROBE_TIMEOUT_SECONDS)
        connection.default_channel  # noqa: B018 - opening it is the probe
