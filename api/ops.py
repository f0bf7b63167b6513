"""Operations endpoints: liveness, readiness, metrics (behind a token), the OpenAPI document."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.context import ApiContext, Limits
from api.errors import error_response
from api.openapi import openapi_document
from shared.observability.health import broker_ready, database_ready, workers_share_broker
from shared.observability.metrics import scrape_registry

log = logging.getLogger(__name__)


def ops_blueprint(api: ApiContext, limits: Limits) -> Blueprint:
    ops = Blueprint("ops", __name__)

    @ops.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @ops.get("/readyz")
    @limits.probe
    def readyz() -> tuple[Response, int]:
        checks = {
            "database": database_ready(api.runtime.sessions),
            "broker": broker_ready(api.producer),
            # Workers alive, none on our broker: every webhook would be answered, none worked.
            "workers_on_this_broker": workers_share_broker(
                api.runtime.sessions, api.settings.broker
            ),
        }
        failed = sorted(name for name, ok in checks.items() if not ok)
        if failed:
            log.warning("not ready: %s failed", ", ".join(failed))
            return jsonify({"status": "unavailable", "failed": failed, "checks": checks}), 503
        return jsonify({"status": "ready", "failed": [], "checks": checks}), 200

    @ops.get("/metrics")
    def metrics() -> Response | tuple[Response, int]:
        # Off the public API unless a scraper proves itself: the figures tell an attacker how
        # the service is doing (and what it refuses).
        if not api.has_bearer(api.settings.metrics_token):
            return error_response(404, "not_found", "The requested URL was not found.")
        registry = scrape_registry(api.settings.prometheus_multiproc_dir)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @ops.get("/openapi.json")
    def openapi() -> Response:
        return jsonify(openapi_document())

    return ops
