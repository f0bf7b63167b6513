"""A webhook endpoint for tests: it verifies each delivery's Stripe-Signature as our receiver
does and keeps the events, so a test sees exactly what the stand-in posted."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import stripe

from devtools.processes import free_port, wait_until


class WebhookInbox:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.events: list[dict[str, Any]] = []
        self.refused = 0
        self._lock = threading.Lock()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = inbox._take(body, self.headers.get("Stripe-Signature", ""))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self.port}/webhook"

    def _take(self, body: bytes, signature: str) -> int:
        try:
            stripe.WebhookSignature.verify_header(body.decode(), signature, self.secret, 300)
        except stripe.SignatureVerificationError:
            with self._lock:
                self.refused += 1
            return 400
        with self._lock:
            self.events.append(json.loads(body))
        return 200

    def received(self) -> list[dict[str, Any]]:
        """The events delivered so far, in the order they arrived (any order, as at Stripe)."""
        with self._lock:
            return list(self.events)

    def wait_for(self, event_ids: list[str], timeout: float = 20) -> list[dict[str, Any]]:
        """Once every one of ``event_ids`` has been delivered: those events, in that order."""

        def delivered() -> dict[str, dict[str, Any]]:
            return {event["id"]: event for event in self.received()}

        wait_until(lambda: set(event_ids) <= set(delivered()), timeout, f"delivery of {event_ids}")
        by_id = delivered()
        return [by_id[event_id] for event_id in event_ids]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def about(events: list[dict[str, Any]], object_ids: set[str]) -> list[dict[str, Any]]:
    """The events whose object, or the object's charge or PaymentIntent, is one of
    ``object_ids``, in the order given."""
    return [event for event in events if _ids(event["data"]["object"]) & object_ids]


def _ids(obj: dict[str, Any]) -> set[str]:
    ids = {obj.get("id"), obj.get("payment_intent"), obj.get("charge")}
    charge = obj.get("latest_charge")
    if isinstance(charge, dict):
        ids.add(charge.get("id"))
    return {value for value in ids if isinstance(value, str)}
