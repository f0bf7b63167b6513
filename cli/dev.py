"""`payments dev`: tooling for the local Stripe stand-in."""

from __future__ import annotations

import time

import click
import requests

from cli.common import needed_event_types, settings_or_exit
from devtools import stripe_events
from devtools.standin import StandIn
from devtools.trigger import SCENARIOS, UnknownScenario, trigger
from shared.config import Settings
from shared.ledger.event_rules import expected_object


@click.group()
def dev() -> None:
    """Dev tooling for the local Stripe stand-in."""


@dev.command("pay")
@click.argument("payment_intent_id")
@click.option("--card", default="4242424242424242", show_default=True, help="Test card number.")
def dev_pay(payment_intent_id: str, card: str) -> None:
    """Confirm PAYMENT_INTENT_ID at the stand-in with a test card, as Stripe.js would."""

    intent = StandIn(settings_or_exit()).pay(payment_intent_id, card)
    click.echo(f"{payment_intent_id} is {intent['status']} at the stand-in")
    if error := intent.get("last_payment_error"):
        # The decline as Stripe words it; our ledger gets it from payment_intent.payment_failed.
        click.echo(f"declined: {error.get('decline_code') or error['code']}: {error['message']}")


@dev.command("authenticate")
@click.argument("payment_intent_id")
@click.option("--fail", is_flag=True, help="Fail the 3-D Secure challenge instead.")
def dev_authenticate(payment_intent_id: str, fail: bool) -> None:
    """Complete the 3-D Secure challenge of PAYMENT_INTENT_ID at the stand-in."""

    intent = StandIn(settings_or_exit()).authenticate(payment_intent_id, success=not fail)
    click.echo(f"{payment_intent_id} is {intent['status']} at the stand-in")


@dev.command("trigger")
@click.argument("event")
@click.option(
    "--web",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="Where an event with no scenario is sent, signed as Stripe signs it.",
)
def dev_trigger(event: str, web: str) -> None:
    """Fire EVENT, like `stripe trigger`. A PaymentIntent's, a refund's and a dispute's events
    come from a payment made at the stand-in, which sends them to the webhook: EVENT is
    payment_intent.succeeded, payment_intent.payment_failed, payment_intent.requires_action,
    payment_intent.amount_capturable_updated, charge.captured, payment_intent.canceled,
    charge.refunded, charge.dispute.created, charge.dispute.funds_reinstated (won),
    charge.dispute.closed (lost) or radar.early_fraud_warning.created. Any other type a
    registered handler runs for (`payments handlers`) is sent straight to the webhook, a
    Stripe-shaped event signed with the first webhook secret."""

    settings = settings_or_exit()
    if event not in SCENARIOS:
        _send_synthetic(settings, event, web)
        return
    try:
        triggered = trigger(StandIn(settings), event)
    except UnknownScenario as exc:
        raise click.BadParameter(str(exc), param_hint="EVENT") from None
    intent = triggered.intent
    click.echo(f"{intent['id']} is {intent['status']} at the stand-in")
    if dispute := triggered.dispute:
        click.echo(f"dispute {dispute['id']} ({dispute['reason']}) is {dispute['status']}")
    click.echo("events sent to the webhook: " + ", ".join(SCENARIOS[event].events))


def _send_synthetic(settings: Settings, event_type: str, web: str) -> None:
    known = needed_event_types(settings)
    if event_type not in known:
        raise click.BadParameter(
            f"no scenario and no registered handler for {event_type!r}; "
            f"scenarios: {', '.join(SCENARIOS)}",
            param_hint="EVENT",
        )
    kind = expected_object(event_type) or event_type.rsplit(".", 1)[0]
    obj = {"id": stripe_events.new_id(kind.split(".")[-1][:8]), "object": kind}
    event = stripe_events.event(event_type, obj)
    body, headers = stripe_events.signed(event, settings.stripe_webhook_secrets[0])
    response = requests.post(f"{web}/webhook", data=body, headers=headers, timeout=10)
    if response.status_code != 200:
        raise click.ClickException(f"the webhook answered {response.status_code}: {response.text}")
    click.echo(f"{event['id']} ({event_type}) sent to {web}/webhook: {response.status_code}")


@dev.command("bootstrap")
@click.option("--web", default="http://127.0.0.1:8000", show_default=True)
@click.option("--timeout", default=60.0, show_default=True)
def dev_bootstrap(web: str, timeout: float) -> None:
    """Wait for the stand-in and the web process, register the webhook, print how to try it."""

    settings = settings_or_exit()
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
    # The same event types as `webhook register`: whatever the handler registry needs.
    StandIn(settings).register_webhook(f"{web}/webhook", needed_event_types(settings))
    click.echo(
        f"""
The stack is up: API {web}, Flower http://127.0.0.1:5555, stand-in {settings.stripe_api_base}.
Try a payment (in another terminal, from this directory):

  set -a; . ./.env.dev; set +a
  curl -s -X POST {web}/api/create-payment -H 'Content-Type: application/json' \\
       -H "Authorization: Bearer ${{API_CLIENT_KEYS#*:}}" -H 'Idempotency-Key: order-123' \\
       -d '{{"amount": 1000, "currency": "usd", "metadata": {{"orderId": "123"}}}}'
  .venv/bin/payments dev pay pi_... --card 4242424242424242
  curl -s {web}/api/payments/pi_... -H 'X-Client-Secret: pi_..._secret_...'
"""
    )
