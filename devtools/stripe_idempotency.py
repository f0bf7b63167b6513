"""Teach the stand-in Stripe's Idempotency-Key, which localstripe ignores.

Real Stripe keeps the first answer to a POST for each (account, Idempotency-Key) for 24 hours:
a retry with the same key and parameters gets that answer again (with ``Idempotent-Replayed:
true``), the same key with other parameters is a 400 ``idempotency_error``, and a retry while the
first request is still running is a 409 ``idempotency_key_in_use``. The product relies on this
(a create-payment whose process died after Stripe answered is retried with the same key), so
the stand-in must behave the same way. Differences left: answers are kept for the stand-in's
life, not 24 hours, and only POSTs under /v1/ are covered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class _Saved:
    fingerprint: str
    status: int
    body: bytes
    content_type: str


def _error(status: int, kind: str, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"type": kind, "code": code, "message": message}}, status=status
    )


def idempotency_middleware() -> Any:
    saved: dict[tuple[str, str], _Saved] = {}
    in_flight: set[tuple[str, str]] = set()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key or not request.path.startswith("/v1/"):
            return await handler(request)
        slot = (request.headers.get("Authorization", ""), key)
        body = await request.read()
        fingerprint = hashlib.sha256(request.path.encode() + b"\x00" + body).hexdigest()
        if slot in in_flight:
            return _error(
                409,
                "idempotency_error",
                "idempotency_key_in_use",
                "There is currently another in-progress request using this Idempotent Key.",
            )
        if slot in saved:
            return _replay(saved[slot], fingerprint)
        in_flight.add(slot)
        try:
            response = await handler(request)
        finally:
            in_flight.discard(slot)
        body_bytes = response.body if isinstance(response, web.Response) else None
        if isinstance(body_bytes, bytes) and response.status < 500:
            # Stripe keeps 4xx answers too (a declined request stays declined for that key).
            saved[slot] = _Saved(fingerprint, response.status, body_bytes, response.content_type)
        return response

    return middleware


def _replay(saved: _Saved, fingerprint: str) -> web.Response:
    if saved.fingerprint != fingerprint:
        return _error(
            400,
            "idempotency_error",
            "idempotency_key_reused",
            "Keys for idempotent requests can only be used with the same parameters they were "
            "first used with.",
        )
    response = web.Response(body=saved.body, status=saved.status, content_type=saved.content_type)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def install(app: web.Application) -> None:
    # First, so a replay never reaches localstripe's handlers (or its auth, which already ran
    # for the original request with the same Authorization).
    app.middlewares.insert(0, idempotency_middleware())
