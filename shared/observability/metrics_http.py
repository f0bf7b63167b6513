"""Serving a process's /metrics over HTTP: in a thread of its own, and behind a bearer token
wherever it is reachable from another host."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

__all__ = ["WSGIServer", "bearer_only", "serve_in_thread"]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        return  # a scrape every few seconds is not worth a line


def bearer_only(app: WSGIApp, token: str) -> WSGIApp:
    """``app`` for requests carrying ``Authorization: Bearer <token>``; 401 for the rest (and
    for everyone when the token is empty)."""
    expected = f"Bearer {token}".encode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        offered = str(environ.get("HTTP_AUTHORIZATION", "")).encode()
        if not token or not hmac.compare_digest(offered, expected):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
            )
            return [b"metrics need the bearer token\n"]
        return app(environ, start_response)

    return guarded


def serve_in_thread(app: WSGIApp, host: str, port: int) -> WSGIServer:
    server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
