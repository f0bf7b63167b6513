"""Servers that receive what handlers' effects send, for tests and the dev stack: an SMTP server
that keeps every message, and an HTTP endpoint that keeps every POST (and answers with the
statuses it is told to). Both speak the real protocols to the real clients (smtplib,
requests), on loopback ports of their own.

The SMTP server is a small one of ours: aiosmtpd, the usual choice, is not in this machine's
package index. It speaks what smtplib needs (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT).
"""

from __future__ import annotations

import email
import email.policy
import json
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """What a receiver got, in order; safe to read while it runs."""

    items: list[Any] = field(default_factory=list)
    # When each arrived (time.monotonic()), in the same order.
    arrivals: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, item: Any) -> None:
        with self.lock:
            self.items.append(item)
            self.arrivals.append(time.monotonic())

    def all(self) -> list[Any]:
        with self.lock:
            return list(self.items)

    def times(self) -> list[float]:
        with self.lock:
            return list(self.arrivals)


class _SmtpSession(socketserver.StreamRequestHandler):
    server: _SmtpServer

    def _say(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self.server.connections.add(time.monotonic())
        # Held: connected, and not a word until the test lets go (a server that hangs).
        self.server.greet.wait()
        self._say("220 payments-test-smtp ready")
        while line := self.rfile.readline():
            verb = line.decode(errors="replace").strip().split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self._say("250 payments-test-smtp")
            elif verb == "DATA":
                self._say("354 end with <CRLF>.<CRLF>")
                message = email.message_from_bytes(self._data(), policy=email.policy.default)
                self.server.received.add(message)
                self._say("250 queued")
            elif verb == "QUIT":
                self._say("221 bye")
                return
            elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                self._say("250 ok")
            else:
                self._say("502 not implemented")

    def _data(self) -> bytes:
        lines = []
        while (line := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)
        return b"".join(lines)


class _SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    received: Received
    connections: Received
    greet: threading.Event


@dataclass
class SmtpSink:
    port: int
    received: Received
    # When each client connected.
    connections: Received
    # Cleared, the server accepts connections and says nothing until it is set again.
    greet: threading.Event


@contextmanager
def holding_smtp_sink() -> Iterator[SmtpSink]:
    """An SMTP server on a loopback port that can be told to hang (``greet.clear()``)."""
    server = _SmtpServer(("127.0.0.1", 0), _SmtpSession)
    server.received, server.connections, server.greet = Received(), Received(), threading.Event()
    server.greet.set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SmtpSink(server.server_address[1], server.received, server.connections, server.greet)
    finally:
        server.greet.set()
        server.shutdown()
        server.server_close()


@contextmanager
def smtp_sink() -> Iterator[tuple[int, Received]]:
    """An SMTP server on a loopback port: yields the port and the messages it received."""
    with holding_smtp_sink() as sink:
        yield sink.port, sink.received


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]
    body: Any


class _PostHandler(BaseHTTPRequestHandler):
    server: _PostServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        # JSON as effects send it; anything else (a form, as Stripe's v1 API takes) as text.
        json_body = "json" in self.headers.get("Content-Type", "")
        body = json.loads(raw or b"null") if json_body else raw.decode(errors="replace")
        self.server.received.add(Post(self.path, dict(self.headers.items()), body))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _PostServer(ThreadingHTTPServer):
    daemon_threads = True
    received: Received
    statuses: list[int]


@contextmanager
def http_receiver(statuses: list[int] | None = None) -> Iterator[tuple[str, Received]]:
    """An HTTP endpoint on a loopback port that keeps every POST and answers ``statuses`` in
    turn (200 once they are used up): yields its base URL and what it received."""
    server = _PostServer(("127.0.0.1", 0), _PostHandler)
    server.received = Received()
    server.statuses = list(statuses or [])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.received
    finally:
        server.shutdown()
        server.server_close()


def message_ids(messages: list[Message]) -> list[str]:
    return [str(message["Message-ID"]) for message in messages]
