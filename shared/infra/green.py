"""Cooperative PostgreSQL for the web process's gevent workers.

gevent makes sockets cooperative by monkey-patching, but psycopg2 talks to PostgreSQL through
libpq in C, which the patch cannot reach: one slow query would stall every request on that
worker. psycopg2's wait callback hands the waiting back to gevent's loop instead (the same
callback as the psycogreen package, kept here so the web process needs nothing more).
"""

from __future__ import annotations

from typing import Any

import psycopg2
from psycopg2 import extensions


def _gevent_wait(conn: Any, timeout: float | None = None) -> None:
    from gevent.socket import wait_read, wait_write

    while True:
        state = conn.poll()
        if state == extensions.POLL_OK:
            return
        if state == extensions.POLL_READ:
            wait_read(conn.fileno(), timeout=timeout)
        elif state == extensions.POLL_WRITE:
            wait_write(conn.fileno(), timeout=timeout)
        else:
            raise psycopg2.OperationalError(f"bad result from poll: {state!r}")


def make_psycopg2_cooperative() -> None:
    extensions.set_wait_callback(_gevent_wait)
