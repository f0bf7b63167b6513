"""`payments webhook`: registering our endpoint for the event types the handlers need."""

from __future__ import annotations

import click

from cli.common import needed_event_types, settings_or_exit
from devtools.standin import StandIn
from shared.infra.stripe_gateway import make_stripe_client


@click.group()
def webhook() -> None:
    """The Stripe webhook endpoint."""


@webhook.command("register")
@click.option("--url", required=True, help="Public URL of our POST /webhook endpoint.")
def webhook_register(url: str) -> None:
    """Register URL to receive Stripe's events.

    On real Stripe this creates a WebhookEndpoint and prints its signing secret, which goes into
    STRIPE_WEBHOOK_SECRET. On the stand-in (STRIPE_API_BASE set) it registers URL with the
    configured secret.
    """
    settings = settings_or_exit()
    events = needed_event_types(settings)
    if settings.uses_stripe_stand_in:
        StandIn(settings).register_webhook(url, events)
        click.echo(f"stand-in at {settings.stripe_api_base} now posts events to {url}")
        return

    endpoint = make_stripe_client(settings).v1.webhook_endpoints.create(
        params={"url": url, "enabled_events": events}  # type: ignore[typeddict-item]
    )
    click.echo(f"created webhook endpoint {endpoint.id} for {url}")
    click.echo("set STRIPE_WEBHOOK_SECRET to this signing secret (shown once):")
    click.echo(endpoint.secret)
