"""``payments``: the operator CLI."""

from __future__ import annotations

import sys
import time

import click
import requests

from shared.config import ConfigError, Settings, load_settings
from shared.handlers import payment_intents
from shared.logging import configure_logging


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


@click.group()
def main() -> None:
    """Operate the Stripe payments service."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create the database if it is absent and migrate it to the latest schema."""
    from shared.db import upgrade

    settings = _settings()
    configure_logging(settings.log_level)
    upgrade(settings.database_url)
    click.echo("database is at the latest schema")


@main.group()
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
    settings = _settings()
    events = list(payment_intents.PAYMENT_INTENT_EVENTS)
    if settings.uses_stripe_stand_in:
        from shared.dev.standin import StandIn

        StandIn(settings).register_webhook(url, events)
        click.echo(f"stand-in at {settings.stripe_api_base} now posts events to {url}")
        return
    from shared.stripe_gateway import make_stripe_client

    endpoint = make_stripe_client(settings).v1.webhook_endpoints.create(
        params={"url": url, "enabled_events": events}  # type: ignore[typeddict-item]
    )
    click.echo(f"created webhook endpoint {endpoint.id} for {url}")
    click.echo("set STRIPE_WEBHOOK_SECRET to this signing secret (shown once):")
    click.echo(endpoint.secret)


@main.group()
def dev() -> None:
    """Dev tooling for the local Stripe stand-in."""


@dev.command("pay")
@click.argument("payment_intent_id")
@click.option("--card", default="4242424242424242", show_default=True, help="Test card number.")
def dev_pay(payment_intent_id: str, card: str) -> None:
    """Confirm PAYMENT_INTENT_ID at the stand-in with a test card, as Stripe.js would."""
    from shared.dev.standin import StandIn

    intent = StandIn(_settings()).pay(payment_intent_id, card)
    click.echo(f"{payment_intent_id} is {intent['status']} at the stand-in")


@dev.command("authenticate")
@click.argument("payment_intent_id")
@click.option("--fail", is_flag=True, help="Fail the 3-D Secure challenge instead.")
def dev_authenticate(payment_intent_id: str, fail: bool) -> None:
    """Complete the 3-D Secure challenge of PAYMENT_INTENT_ID at the stand-in."""
    from shared.dev.standin import StandIn

    intent = StandIn(_settings()).authenticate(payment_intent_id, success=not fail)
    click.echo(f"{payment_intent_id} is {intent['status']} at the stand-in")


@dev.command("bootstrap")
@click.option("--web", default="http://127.0.0.1:8000", show_default=True)
@click.option("--timeout", default=60.0, show_default=True)
def dev_bootstrap(web: str, timeout: float) -> None:
    """Wait for the stand-in and the web process, register the webhook, print how to try it."""
    from shared.dev.standin import StandIn

    settings = _settings()
    deadline = time.monotonic() + timeout
    stand_in_auth = (settings.stripe_secret_key, "")
    for url, auth in (
        (f"{settings.stripe_api_base}/v1/events", stand_in_auth),
        (f"{web}/healthz", None),
    ):
        while True:
            try:
                requests.get(url, auth=auth, timeout=5)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise click.ClickException(f"{url} did not answer within {timeout}s") from None
                time.sleep(0.5)
    StandIn(settings).register_webhook(
        f"{web}/webhook", list(payment_intents.PAYMENT_INTENT_EVENTS)
    )
    click.echo(
        f"""
The stack is up: API {web}, Flower http://127.0.0.1:5555, stand-in {settings.stripe_api_base}.
Try a payment (in another terminal, from this directory):

  curl -s -X POST {web}/api/create-payment -H 'Content-Type: application/json' \\
       -d '{{"amount": 1000, "currency": "usd", "metadata": {{"orderId": "123"}}}}'
  set -a; . ./.env.dev; set +a
  .venv/bin/payments dev pay pi_... --card 4242424242424242
  curl -s {web}/api/payments/pi_...
"""
    )


if __name__ == "__main__":
    sys.exit(main())
