"""Error reporting: Sentry, when SENTRY_DSN is configured."""

from __future__ import annotations

from typing import Any

import sentry_sdk

from shared.config import Settings
from shared.observability.metrics import DEAD_LETTERED
from shared.observability.redaction import redact


def init_sentry(settings: Settings, *, component: str) -> bool:
    """Start Sentry for this process if a DSN is configured. Returns whether it started."""
    if not settings.sentry_dsn:
        return False
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.flask import FlaskIntegration

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        integrations=[FlaskIntegration(), CeleryIntegration()],
        # Request bodies and headers carry signatures and client secrets; keep them out.
        max_request_body_size="never",
        # Frame locals would carry payloads, PaymentIntents and settings.
        include_local_variables=False,
        traces_sample_rate=0.0,
        before_send=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
    )
    sentry_sdk.set_tag("component", component)
    return True


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


# Request headers whose values are sent to Sentry. Any other header may carry a credential (a
# checkout session's token, a client secret, an idempotency key, a signature, one a later
# change adds), so its value is withheld, whatever its name.
_REPORTED_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "content-length",
        "content-type",
        "host",
        "user-agent",
        "x-forwarded-proto",
        "x-request-id",
    }
)
_WITHHELD = "[Filtered]"


def _withhold_credentials(request: dict[str, Any]) -> None:
    headers = request.get("headers")
    if isinstance(headers, dict):
        request["headers"] = {
            name: value if name.lower() in _REPORTED_HEADERS else _WITHHELD
            for name, value in headers.items()
        }
    if request.get("cookies"):
        request["cookies"] = _WITHHELD


def scrub_event(event: Any, hint: Any) -> Any:
    """Sentry's before_send: withhold request headers that may carry credentials, and every
    cookie; mask secrets and card numbers anywhere else in the event."""
    if isinstance(event.get("request"), dict):
        _withhold_credentials(event["request"])
    return _scrub(event)


def scrub_breadcrumb(crumb: Any, hint: Any) -> Any:
    return _scrub(crumb)


def report_dead_letter(
    error: BaseException, *, event_id: str, handler: str, event_type: str | None
) -> None:
    """Count a dead-lettered run and send it to Sentry (a no-op when Sentry is off)."""
    DEAD_LETTERED.labels(handler=handler).inc()
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("handler", handler)
        scope.set_tag("event_type", event_type or "unknown")
        scope.set_tag("dead_letter", "true")
        scope.set_context("handler_run", {"event_id": event_id, "handler": handler})
        sentry_sdk.capture_exception(error)


def report_ingest_failure(error: BaseException) -> None:
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("ingest_failure", "true")
        sentry_sdk.capture_exception(error)
