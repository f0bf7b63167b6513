"""`payments webhook`: registering our endpoint for the event types the handlers need, and
moving it to a new API version."""

from __future__ import annotations

from secrets import token_hex

import click

from cli.common import needed_event_types, settings_or_exit
from devtools.standin import StandIn
from shared.config import Settings
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

    # Rendered in our version, whatever the account's default is or becomes.
    params = {"url": url, "enabled_events": events, "api_version": settings.stripe_api_version}
    endpoint = make_stripe_client(settings).v1.webhook_endpoints.create(
        params=params  # type: ignore[arg-type]
    )
    click.echo(f"created webhook endpoint {endpoint.id} for {url}")
    click.echo("set STRIPE_WEBHOOK_SECRET to this signing secret (shown once):")
    click.echo(endpoint.secret)


STEPS = """Next:
  1. Add {name}={secret} to STRIPE_WEBHOOK_SECRET beside the secret in use, and deploy
     every web process: both endpoints' deliveries then verify, and each event is applied
     once, whichever endpoint's delivery comes first.
  2. Watch webhook_signature_secret_matches_total{{endpoint="{name}"}} grow.
  3. Set STRIPE_API_VERSION={version} and deploy, then delete the old endpoint:
     payments webhook migrate --finish OLD_ENDPOINT_ID
  4. Remove the old secret from STRIPE_WEBHOOK_SECRET."""


@webhook.command("migrate")
@click.option("--url", help="Public URL of our POST /webhook endpoint (with --to-version).")
@click.option("--to-version", "version", help="The Stripe API version the new endpoint sends.")
@click.option("--name", default=None, help="The new endpoint's name in STRIPE_WEBHOOK_SECRET.")
@click.option("--finish", "old_endpoint", help="Delete this old endpoint: the migration's end.")
def webhook_migrate(
    url: str | None, version: str | None, name: str | None, old_endpoint: str | None
) -> None:
    """Move our webhook endpoint to a new API version the way Stripe documents it (an
    endpoint's version never changes): a second endpoint at the new version, both running,
    then the old one deleted. --to-version creates the new one and prints its secret once;
    --finish deletes the old one."""
    settings = settings_or_exit()
    if old_endpoint is not None:
        _finish(settings, old_endpoint)
        return
    if not url or not version:
        raise click.UsageError("give --url and --to-version, or --finish OLD_ENDPOINT_ID")
    events = needed_event_types(settings)
    name = name or "v" + version.split("-")[0] + version.split("-")[1]
    if settings.uses_stripe_stand_in:
        endpoint_id, secret = f"payments-service-{name}", "whsec_" + token_hex(24)
        StandIn(settings).register_webhook(url, events, endpoint_id=endpoint_id, secret=secret)
    else:
        params = {"url": url, "enabled_events": events, "api_version": version}
        endpoint = make_stripe_client(settings).v1.webhook_endpoints.create(
            params=params  # type: ignore[arg-type]
        )
        endpoint_id, secret = endpoint.id, str(endpoint.secret)
    click.echo(f"created webhook endpoint {endpoint_id} at {version} for {url}")
    click.echo("its signing secret (shown once):")
    click.echo(secret)
    click.echo(STEPS.format(name=name, secret=secret, version=version))


def _finish(settings: Settings, old_endpoint: str) -> None:
    if settings.uses_stripe_stand_in:
        if not StandIn(settings).delete_webhook(old_endpoint):
            raise click.ClickException(f"the stand-in has no webhook endpoint {old_endpoint}")
    else:
        make_stripe_client(settings).v1.webhook_endpoints.delete(old_endpoint)
    click.echo(
        f"deleted webhook endpoint {old_endpoint}; remove its secret from "
        "STRIPE_WEBHOOK_SECRET once the deploy that sets STRIPE_API_VERSION is done"
    )
