"""Teach the stand-in what follows a payment at Stripe: refunds, manual capture, cancellation,
disputes and early fraud warnings, with the events Stripe sends for each, in Stripe's shape.

Each module says what it changes of localstripe and where the stand-in still differs.
"""

from __future__ import annotations

from aiohttp import web

from devtools import (
    stripe_capture,
    stripe_card_followups,
    stripe_disputes,
    stripe_refunds,
    stripe_shape,
)


def install(app: web.Application) -> None:
    stripe_shape.install(app)  # pending_webhooks, request and previous_attributes on events
    stripe_refunds.install()
    stripe_capture.install(app)
    stripe_disputes.install(app)
    stripe_card_followups.install(app)
