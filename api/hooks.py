"""Per-request plumbing: trusted proxies, the request id on every log line, security headers."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from shared.config import Settings
from shared.observability.logs import bind, clear_context, current_ids

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,100}")


def install_request_hooks(app: Flask, settings: Settings) -> None:
    if settings.trusted_proxy_hops:
        # Only as many X-Forwarded-* hops as there are proxies we run: anything further left
        # was written by the client and proves nothing.
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    app.before_request(_bind_request_id)
    app.after_request(_security_headers)


def _bind_request_id() -> None:
    clear_context()
    offered = request.headers.get("X-Request-Id", "")
    # A proxy's id joins our lines to its own; anything odd is replaced, not trusted.
    bind(request_id=offered if REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex)


def _security_headers(response: Response) -> Response:
    request_id = current_ids().get("request_id")
    if request_id:
        response.headers["X-Request-Id"] = request_id
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault(
        "Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"
    )
    if request.path.startswith(("/api/", "/admin/", "/webhook")):
        # Responses carry client secrets and payment state: never cache them anywhere.
        response.headers["Cache-Control"] = "no-store"
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    return response
