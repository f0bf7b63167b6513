"""`payments dev trigger EVENT` and `payments dev pay`, run as a developer runs them, against
the test stand-in: the stand-in's events reach our webhook, the worker and our ledger, with no
browser and no hand-built event."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from shared.dev.processes import REPO_ROOT, run_payments


def trigger(base_env: dict[str, str], event: str) -> Any:
    env = {**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT)}
    return run_payments("dev", "trigger", event, env=env, timeout=60)


def triggered_intent(base_env: dict[str, str], event: str) -> str:
    result = trigger(base_env, event)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"\b(pi_\w+) is ", result.stdout)
    assert match, result.stdout
    return match[1]


@pytest.mark.parametrize(
    ("event", "status"),
    [
        ("payment_intent.succeeded", "succeeded"),
        ("payment_intent.requires_action", "requires_action"),
    ],
)
def test_trigger_brings_our_ledger_to_the_scenarios_state(base_env, api, event, status):
    intent_id = triggered_intent(base_env, event)

    view = api.wait_for_status(intent_id, status)

    # Made at the stand-in, not through our API: the ledger learnt of it from its events only.
    assert view["metadata"]["scenario"] == event


def test_trigger_payment_failed_records_the_decline(base_env, api):
    intent_id = triggered_intent(base_env, "payment_intent.payment_failed")

    view = api.wait_for_decline(intent_id)

    assert view["status"] == "requires_payment_method"
    assert view["lastError"]["declineCode"] == "generic_decline"


def test_an_unknown_scenario_names_the_known_ones(base_env, live_api):
    result = trigger(base_env, "charge.refunded")

    assert result.returncode == 2
    assert "payment_intent.succeeded" in result.stderr


def test_dev_pay_says_why_a_card_was_declined(base_env, api):
    intent_id = api.create_payment({"amount": 1000, "currency": "usd"}).json()["paymentIntentId"]
    env = {**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT)}

    result = run_payments("dev", "pay", intent_id, "--card", "4000000000009995", env=env)

    assert result.returncode == 0, result.stderr
    assert "requires_payment_method" in result.stdout
    assert "insufficient_funds: Your card has insufficient funds." in result.stdout
    assert api.wait_for_decline(intent_id)["lastError"]["declineCode"] == "insufficient_funds"
