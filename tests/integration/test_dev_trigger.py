"""`payments dev trigger EVENT` and `payments dev pay`, run as a developer runs them, against
the test stand-in: the stand-in's events reach our webhook, the worker and our ledger, with no
browser and no hand-built event."""

from __future__ import annotations

import os
import re
import time
from typing import Any

import pytest

from devtools.processes import REPO_ROOT, run_payments, wait_until
from devtools.trigger import SCENARIOS
from shared.models import StripeEvent
from tests.support.webhook_inbox import about


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
    result = trigger(base_env, "invoice.paid")

    assert result.returncode == 2
    assert "payment_intent.succeeded" in result.stderr


def test_a_registered_type_with_no_scenario_is_sent_signed_to_the_webhook(
    base_env, live_api, sessions, worker
):
    env = {**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT)}
    result = run_payments("dev", "trigger", "test.flaky", "--web", live_api.url, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"\b(evt_\w+) \(test\.flaky\) sent", result.stdout)
    assert match, result.stdout

    def recorded() -> bool:
        with sessions() as session:
            return session.get(StripeEvent, match[1]) is not None

    wait_until(recorded, 20, "the triggered event recorded")


def test_dev_pay_says_why_a_card_was_declined(base_env, api):
    intent_id = api.create_payment({"amount": 1000, "currency": "usd"}).json()["paymentIntentId"]
    env = {**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT)}

    result = run_payments("dev", "pay", intent_id, "--card", "4000000000009995", env=env)

    assert result.returncode == 0, result.stderr
    assert "requires_payment_method" in result.stdout
    assert "insufficient_funds: Your card has insufficient funds." in result.stdout
    assert api.wait_for_decline(intent_id)["lastError"]["declineCode"] == "insufficient_funds"


def stand_in_events(stand_in, intent_id: str, since: int, count: int) -> list[dict[str, Any]]:
    """The scenario's events at the stand-in, in the order it made them."""

    def found() -> list[dict[str, Any]]:
        return about(stand_in.events(since), {intent_id})

    wait_until(lambda: len(found()) >= count, 20, f"{count} events about {intent_id}")
    return found()


def recorded(sessions, event_ids: list[str]) -> set[str]:
    with sessions() as session:
        rows = session.query(StripeEvent.id).filter(StripeEvent.id.in_(event_ids)).all()
    return {row.id for row in rows}


def view_when(api, intent_id: str, reached) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def check() -> bool:
        response = api.payment(intent_id)
        if response.status_code != 200:
            return False  # not recorded yet
        seen.update(response.json())
        return bool(reached(seen))

    try:
        wait_until(check, 30, f"{intent_id} in the ledger", interval=0.2)
    except TimeoutError:
        raise AssertionError(f"{intent_id}: last view {seen}") from None
    return seen


AFTER_THE_PAYMENT = {
    "charge.refunded": lambda v: (
        v["amountRefunded"] == 2000 and [r["status"] for r in v["refunds"]] == ["succeeded"]
    ),
    "payment_intent.amount_capturable_updated": lambda v: (
        v["status"] == "requires_capture" and v["amountCapturable"] == 2000
    ),
    "charge.captured": lambda v: v["status"] == "succeeded" and v["amountReceived"] == 1500,
    "payment_intent.canceled": lambda v: v["status"] == "canceled",
    "charge.dispute.created": lambda v: (
        (v["dispute"] or {}).get("status") == "needs_response" and v["dispute"]["fundsWithdrawn"]
    ),
    "charge.dispute.funds_reinstated": lambda v: (
        (v["dispute"] or {}).get("status") == "won" and v["dispute"]["fundsReinstated"]
    ),
    "charge.dispute.closed": lambda v: (v["dispute"] or {}).get("status") == "lost",
    "radar.early_fraud_warning.created": lambda v: v["status"] == "succeeded",
}


@pytest.mark.parametrize("event", list(AFTER_THE_PAYMENT))
def test_after_the_payment_scenarios_reach_our_ledger_in_stripes_order(
    base_env, api, stand_in, sessions, event
):
    since = int(time.time())
    intent_id = triggered_intent(base_env, event)
    expected = SCENARIOS[event].events

    events = stand_in_events(stand_in, intent_id, since, len(expected))

    assert [e["type"] for e in events] == list(expected)
    view = view_when(api, intent_id, AFTER_THE_PAYMENT[event])
    assert view["metadata"]["scenario"] == event
    # Every event of the scenario went through our webhook, the worker and the database.
    ids = [e["id"] for e in events]
    wait_until(lambda: recorded(sessions, ids) == set(ids), 20, "every event recorded")
    created = [e["created"] for e in events]
    assert created == sorted(created)


def test_a_dispute_scenario_names_its_own_charge_and_payment(base_env, stand_in):
    since = int(time.time())
    result = trigger(base_env, "charge.dispute.funds_reinstated")

    assert result.returncode == 0, result.stdout + result.stderr
    intent_id = re.search(r"\b(pi_\w+) is succeeded", result.stdout)[1]  # type: ignore[index]
    assert re.search(r"dispute dp_\w+ \(fraudulent\) is won", result.stdout), result.stdout
    events = stand_in_events(stand_in, intent_id, since, 7)
    intent = stand_in.retrieve(intent_id)
    disputes = [e["data"]["object"] for e in events if e["type"].startswith("charge.dispute.")]
    assert {d["charge"] for d in disputes} == {intent["latest_charge"]["id"]}
    assert {(d["payment_intent"], d["amount"], d["currency"]) for d in disputes} == {
        (intent_id, intent["amount_received"], intent["currency"])
    }
    assert {d["evidence_details"]["due_by"] for d in disputes} == {
        disputes[0]["evidence_details"]["due_by"]
    }
    assert [d["status"] for d in disputes] == [
        "needs_response",
        "needs_response",
        "under_review",
        "won",
        "won",
    ]
