"""Cooperative PostgreSQL for the web process's gevent workers, with every wait bounded.

gevent makes sockets cooperative by monkey-patching, but psycopg2 talks to PostgreSQL through
libpq in C, which the patch cannot reach: one slow query would stall every request on that
worker. psycopg2's wait callback hands the waiting back to gevent's loop instead (the same
callback as the psycogreen package, kept here so the web process needs nothing more).

That callback connects through ``PQconnectPoll``, which ignores libpq's ``connect_timeout``,
and a server that stops answering (no RST, no FIN) would hold a request for the kernel's TCP
retries. So each wait has its own bound: the connect timeout while connecting, and the
statement timeout plus a margin once connected (past it the server would have answered, even
if only to cancel). At the bound the connection's socket is shut down and the request gets the
database's 503, as for any connection lost.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import psycopg2
from psycopg2 import extensions

# Connected: a query's answer is awaited under the statement bound.
_CONNECTED = (extensions.STATUS_READY, extensions.STATUS_BEGIN, extensions.STATUS_PREPARED)
# What a lost server looks like to SQLAlchemy (its psycopg2 dialect's disconnect messages), so
# the pool drops the connection instead of handing it out again.
LOST = "could not receive data from server: no answer within {:.0f} s"
UNREACHABLE = "could not connect to server: no answer within {:.0f} s"


@dataclass(frozen=True)
class GreenWaits:
    connect_seconds: float
    query_seconds: float


def _wait_callback(waits: GreenWaits) -> Any:
    def wait(conn: Any, timeout: float | None = None) -> None:
        from gevent.socket import wait_read, wait_write

        connected = conn.status in _CONNECTED
        bound = waits.query_seconds if connected else waits.connect_seconds
        deadline = time.monotonic() + bound
        while True:
            state = conn.poll()
            if state == extensions.POLL_OK:
                return
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                if state == extensions.POLL_READ:
                    wait_read(conn.fileno(), timeout=left)
                elif state == extensions.POLL_WRITE:
                    wait_write(conn.fileno(), timeout=left)
                else:
                    raise psycopg2.OperationalError(f"bad result from poll: {state!r}")
            except TimeoutError:  # gevent raises socket.timeout, the same class
                _shut_down(conn)
                raise psycopg2.OperationalError(
                    (LOST if connected else UNREACHABLE).format(bound)
                ) from None

    return wait


def _shut_down(conn: Any) -> None:
    """End the connection's socket under libpq. Closing the connection itself would block the
    whole process: with a query in flight libpq sends the server a cancel request over a new,
    blocking connection. A shut-down socket fails every later read or write at once, so the
    pool's close of this connection costs nothing."""
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(conn.fileno())) as sock:
        sock.shutdown(socket.SHUT_RDWR)


def make_psycopg2_cooperative(waits: GreenWaits) -> None:
    extensions.set_wait_callback(_wait_callback(waits))
