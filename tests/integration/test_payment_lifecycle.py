"""After the payment, end to end: refund and dispute events posted to /webhook as Stripe signs
them, recorded by the worker, shown by GET /api/payments/<id>."""

from __future__ import annotations

import random
import time
from typing import Any

import requests

from devtools import stripe_events
from devtools.processes import wait_until
from tests.conftest import ADMIN_TOKEN, WEBHOOK_SECRET, WORKER_METRICS_PORT
from tests.integration.test_operability import scrape, value
from tests.support.stripe_objects import dispute, refund


def post(api, event_type: str, obj: dict[str, Any], created: int) -> None:
    body, headers = stripe_events.signed(
        stripe_events.event(event_type, obj, created=created), WEBHOOK_SECRET
    )
    assert api.post_webhook(body, headers).status_code == 200


def view_when(api, intent_id: str, reached, what: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def check() -> bool:
        response = api.payment(intent_id)
        if response.status_code == 200:
            seen.update(response.json())
        return bool(seen) and reached(seen)

    try:
        wait_until(check, 30, what, interval=0.2)
    except TimeoutError:
        raise AssertionError(f"{intent_id}: {what} not reached; last view {seen}") from None
    return seen


def paid(api, stand_in) -> str:
    created = api.create_payment({"amount": 1000, "currency": "usd"})
    intent_id: str = created.json()["paymentIntentId"]
    stand_in.pay(intent_id, "4242424242424242")
    api.wait_for_status(intent_id, "succeeded")
    return intent_id


def test_a_partial_then_a_full_refund(api, stand_in):
    intent_id = paid(api, stand_in)
    now = int(time.time())
    post(
        api, "refund.created", refund("re_part1" + intent_id[-8:], intent_id, 300, "succeeded"), now
    )

    partial = view_when(api, intent_id, lambda v: v["amountRefunded"] == 300, "a partial refund")
    assert partial["status"] == "succeeded"  # the PaymentIntent's own status stays Stripe's
    assert (partial["amountReceived"], partial["amountCapturable"]) == (1000, 0)

    rest = refund("re_part2" + intent_id[-8:], intent_id, 700, "pending")
    post(api, "refund.created", rest, now + 1)
    post(api, "refund.updated", {**rest, "status": "succeeded"}, now + 2)
    full = view_when(
        api,
        intent_id,
        lambda v: [r["status"] for r in v["refunds"]] == ["succeeded", "succeeded"],
        "a full refund",
    )
    assert full["amountRefunded"] == 1000


def _dispute_events(dispute_id: str, intent_id: str, outcome: str) -> list[tuple[str, dict]]:
    events = [
        ("charge.dispute.created", dispute(dispute_id, intent_id, "needs_response")),
        ("charge.dispute.funds_withdrawn", dispute(dispute_id, intent_id, "needs_response")),
        ("charge.dispute.updated", dispute(dispute_id, intent_id, "under_review")),
        ("charge.dispute.closed", dispute(dispute_id, intent_id, outcome)),
    ]
    if outcome == "won":
        events.append(("charge.dispute.funds_reinstated", dispute(dispute_id, intent_id, "won")))
    return events


def _dispute_state(view: dict[str, Any]) -> tuple[str, bool, bool] | None:
    dispute = view["dispute"]
    if dispute is None:
        return None
    return dispute["status"], dispute["fundsWithdrawn"], dispute["fundsReinstated"]


def test_a_dispute_won_and_one_lost_in_shuffled_order(api, stand_in):
    for outcome, seed in (("won", 1), ("lost", 2)):
        intent_id = paid(api, stand_in)
        events = _dispute_events("dp_" + outcome + intent_id[-8:], intent_id, outcome)
        now = int(time.time())
        order = list(range(len(events)))
        random.Random(seed).shuffle(order)
        for index in order:
            event_type, obj = events[index]
            post(api, event_type, obj, now + index)

        # The worker applies the events in parallel: the closing one may be recorded before the
        # funds ones, so the whole last state is awaited.
        last = (outcome, True, outcome == "won")
        view = view_when(
            api,
            intent_id,
            lambda v, last=last: _dispute_state(v) == last,
            f"the dispute {outcome}, funds withdrawn, reinstated if won",
        )
        assert view["dispute"]["evidenceDueBy"] is not None
        assert view["status"] == "succeeded"


def test_a_refund_delivered_before_the_payments_succeeded_still_ends_right(api):
    intent_id = f"pi_early{int(time.time() * 1000)}"
    now = int(time.time())
    post(
        api, "refund.created", refund("re_" + intent_id[-10:], intent_id, 400, "succeeded"), now + 5
    )
    intent = stripe_events.payment_intent(
        intent_id=intent_id, status="succeeded", amount=1000, created=now
    )
    intent["amount_received"] = 1000
    post(api, "payment_intent.succeeded", intent, now + 1)

    view = view_when(api, intent_id, lambda v: v["amountRefunded"] == 400, "the early refund shown")
    assert view["status"] == "succeeded"
    assert view["amountReceived"] == 1000


def test_a_dispute_and_a_charges_refunds_before_the_payment_show_once_it_comes(api):
    intent_id = f"pi_first{int(time.time() * 1000)}"
    charge_id = "ch_" + intent_id[3:]
    now = int(time.time())
    # The Charge lists a refund that names only its charge (an older API version's shape).
    listed = refund("re_" + intent_id[-10:], None, 250, "succeeded", charge=None)
    charge = {"id": charge_id, "object": "charge", "payment_intent": intent_id,
              "amount": 1000, "amount_refunded": 250, "refunds": {"data": [listed]}}  # fmt: skip
    post(api, "charge.refunded", charge, now + 3)
    opened = dispute("dp_" + intent_id[-10:], intent_id, "needs_response", charge=charge_id)
    post(api, "charge.dispute.created", opened, now + 4)
    intent = stripe_events.payment_intent(
        intent_id=intent_id, status="succeeded", amount=1000, created=now
    )
    post(api, "payment_intent.succeeded", {**intent, "amount_received": 1000}, now + 1)

    view = view_when(
        api, intent_id, lambda v: v["dispute"] is not None and v["refunds"], "the early ones"
    )
    assert (view["status"], view["amountRefunded"]) == ("succeeded", 250)
    assert view["dispute"]["status"] == "needs_response"


def test_a_new_dispute_is_counted_once_on_a_series_that_was_already_there(api, settle):
    metrics = f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics"
    settle()
    before = scrape(metrics)
    # Born at 0: Prometheus' increase() then sees the first dispute (the alert relies on it).
    assert ("disputes_total", (("status", "needs_response"),)) in before
    dispute_id = f"dp_count{int(time.time() * 1000)}"
    now = int(time.time())
    opened = dispute(dispute_id, "pi_count" + dispute_id[-8:], "needs_response")
    post(api, "charge.dispute.created", opened, now)
    post(api, "charge.dispute.updated", opened, now + 1)  # same state again: no new count
    settle()
    after = scrape(metrics)
    assert value(after, "disputes_total", status="needs_response") == (
        value(before, "disputes_total", status="needs_response") + 1
    )


def operate(live_api, intent_id: str, operation: str, body: dict[str, Any], key: str):
    return requests.post(
        f"{live_api.url}/admin/payments/{intent_id}/{operation}",
        json=body,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Idempotency-Key": key},
        timeout=30,
    )


def test_operators_refund_in_part_then_in_full_and_no_further(api, live_api, stand_in):
    intent_id = paid(api, stand_in)

    partial = operate(live_api, intent_id, "refunds", {"amount": 400}, f"r1-{intent_id}")
    assert partial.status_code == 200, partial.text
    # Recorded from Stripe's answer at once, before its events arrive.
    assert partial.json()["amountRefunded"] == 400

    full = operate(live_api, intent_id, "refunds", {}, f"r2-{intent_id}")
    assert full.status_code == 200, full.text
    assert full.json()["amountRefunded"] == 1000
    assert [r["amount"] for r in full.json()["refunds"]] == [400, 600]

    beyond = operate(live_api, intent_id, "refunds", {"amount": 1}, f"r3-{intent_id}")
    assert beyond.status_code == 400
    assert beyond.json()["error"]["code"] in ("charge_already_refunded", "amount_too_large")


def test_a_manual_capture_payment_captured_in_part(api, live_api, stand_in):
    created = api.create_payment({"amount": 2000, "currency": "usd", "captureMethod": "manual"})
    intent_id: str = created.json()["paymentIntentId"]
    stand_in.pay(intent_id, "4242424242424242")

    captured = operate(live_api, intent_id, "capture", {"amount": 1500}, f"c-{intent_id}")

    assert captured.status_code == 200, captured.text
    view = captured.json()
    assert (view["status"], view["captureMethod"]) == ("succeeded", "manual")
    assert (view["amountReceived"], view["amountCapturable"]) == (1500, 0)
