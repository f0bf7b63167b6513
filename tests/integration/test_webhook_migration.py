"""`payments webhook migrate`, on the stand-in: a second endpoint at the new API version with a
secret of its own, both running (every event delivered twice, each signed with its own
endpoint's secret, each applied once), then the old one deleted and the new one alone."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from api import create_app
from devtools.processes import REPO_ROOT, ServedApp, run_payments, wait_until
from devtools.standin import WEBHOOK_ENDPOINT_ID
from shared.models import HandlerRun, StripeEvent

NEW_VERSION = "2026-10-28.endive"


class Swappable:
    """A WSGI app whose settings change under a running server, as a deploy changes them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


@pytest.fixture
def our_endpoint(settings, stand_in, live_api) -> Iterator[tuple[ServedApp, Swappable]]:
    app = Swappable(create_app(settings))
    served = ServedApp(app)
    stand_in.register_webhook(f"{served.url}/webhook")
    try:
        yield served, app
    finally:
        stand_in.delete_webhook(f"{WEBHOOK_ENDPOINT_ID}-v2026")
        stand_in.register_webhook(f"{live_api.url}/webhook")
        served.stop()


def matches(endpoint: str, index: str) -> float:
    labels = {"secret_index": index, "endpoint": endpoint}
    return REGISTRY.get_sample_value("webhook_signature_secret_matches_total", labels) or 0.0


def succeeded_event(stand_in, intent_id: str) -> str:
    (event,) = [
        e["id"]
        for e in stand_in.events()
        if e["type"] == "payment_intent.succeeded" and e["data"]["object"]["id"] == intent_id
    ]
    return str(event)


def paid(api, stand_in) -> str:
    intent_id = api.create_payment({"amount": 900, "currency": "usd"}).json()["paymentIntentId"]
    stand_in.pay(intent_id, "4242424242424242")
    api.wait_for_status(intent_id, "succeeded")
    return str(intent_id)


def secrets_that_verified(caplog, event_id: str) -> list[int]:
    """Which configured secret verified each delivery of ``event_id`` (the receiver's log)."""
    found = []
    for record in caplog.records:
        message = record.getMessage()
        if message.startswith(f"webhook {event_id} ") and "verified with secret #" in message:
            found.append(int(message.rsplit("#", 1)[1].split()[0]))
    return sorted(found)


def test_both_endpoints_run_each_event_applied_once_then_the_new_one_alone(
    settings, base_env, stand_in, api, sessions, worker, our_endpoint, caplog
):
    caplog.set_level("INFO", logger="api.webhook")
    served, app = our_endpoint
    env = {**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT)}
    created = run_payments(
        "webhook", "migrate", "--url", f"{served.url}/webhook", "--to-version", NEW_VERSION,
        "--name", "v2026", env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    (secret,) = re.findall(r"^(whsec_\w+)$", created.stdout, re.MULTILINE)
    assert "payments webhook migrate --finish" in created.stdout
    # Step 1 of what it printed: the new secret beside the old ones, deployed.
    both = replace(
        settings,
        stripe_webhook_secrets=(*settings.stripe_webhook_secrets, secret),
        stripe_webhook_endpoints=("0", "1", "v2026"),
    )
    app.app = create_app(both)

    before_old, before_new = matches("0", "0"), matches("v2026", "2")
    intent_id = paid(api, stand_in)
    event_id = succeeded_event(stand_in, intent_id)
    with sessions() as session:
        assert session.get(StripeEvent, event_id) is not None
        runs = session.scalars(select(HandlerRun).where(HandlerRun.event_id == event_id)).all()
    assert runs and {run.attempts for run in runs} == {1}
    # Delivered by both endpoints (the old secret, #0, and the new, #2), applied once.
    wait_until(
        lambda: secrets_that_verified(caplog, event_id) == [0, 2], 20, "both endpoints' deliveries"
    )
    assert matches("0", "0") > before_old and matches("v2026", "2") > before_new

    finished = run_payments("webhook", "migrate", "--finish", WEBHOOK_ENDPOINT_ID, env=env)
    assert finished.returncode == 0, finished.stderr
    later = succeeded_event(stand_in, paid(api, stand_in))
    wait_until(
        lambda: secrets_that_verified(caplog, later) != [], 20, "the new endpoint's delivery"
    )
    assert secrets_that_verified(caplog, later) == [2]
