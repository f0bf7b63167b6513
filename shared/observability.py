"""Error reporting: Sentry, when SENTRY_DSN is configured."""

from __future__ import annotations

import sentry_sdk

from shared.config import Settings


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
        send_default_pii=False,
        max_request_body_size="never",
        traces_sample_rate=0.0,
    )
    sentry_sdk.set_tag("component", component)
    return True
