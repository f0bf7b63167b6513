"""A local HTTP endpoint standing in for Sentry: it records the envelopes the SDK sends."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devtools.processes import free_port


class FakeSentry:
    def __init__(self) -> None:
        self.port = free_port()
        self.envelopes: list[list[dict[str, Any]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                items = []
                for line in body.splitlines():
                    try:
                        items.append(json.loads(line))
                    except ValueError:
                        continue
                recorder.envelopes.append(items)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.dsn = f"http://publickey@127.0.0.1:{self.port}/1"

    def events(self) -> list[dict[str, Any]]:
        """Error events (envelope items with an exception or a level)."""
        return [
            item
            for envelope in self.envelopes
            for item in envelope
            if isinstance(item, dict) and ("exception" in item or item.get("level") == "error")
        ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
