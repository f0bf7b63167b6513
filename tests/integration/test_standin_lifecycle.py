"""The stand-in after the payment, as Stripe: refunds, manual capture, cancellation, disputes
from Stripe's dispute test cards and an early fraud warning. Each test drives a stand-in process
of its own through its HTTP API and reads the events twice: as the stand-in lists them (the
order Stripe made them) and as they reached a webhook endpoint, signed."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devtools.processes import Process, free_port, port_open, python_module, wait_until
from devtools.standin import StandIn
from tests.support.webhook_inbox import WebhookInbox, about

FRAUD_CARD = "4000000000000259"


@pytest.fixture(scope="module")
def own_stand_in(settings) -> Iterator[StandIn]:
    port = free_port()
    proc = Process(
        "localstripe-lifecycle",
        python_module("devtools.localstripe_server", "--port", str(port)),
        dict(os.environ),
    )
    try:
        wait_until(lambda: port_open(port), 20, "stand-in start")
        yield StandIn(dataclasses.replace(settings, stripe_api_base=f"http://127.0.0.1:{port}"))
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def inbox(own_stand_in, settings) -> Iterator[WebhookInbox]:
    receiver = WebhookInbox(settings.stripe_webhook_secrets[0])
    own_stand_in.register_webhook(receiver.url)
    yield receiver
    receiver.stop()


class Driver:
    def __init__(self, stand_in: StandIn, inbox: WebhookInbox) -> None:
        self.stand_in = stand_in
        self.inbox = inbox
        self.base = stand_in._base
        self.auth = stand_in._auth

    def paid(self, card: str = "4242424242424242", **create: Any) -> dict[str, Any]:
        intent = self.stand_in.create_payment_intent(2000, "usd", {}, **create)
        return self.stand_in.pay(intent["id"], card)

    def post(self, path: str, data: dict[str, str], key: str | None = None) -> requests.Response:
        headers = {"Idempotency-Key": key} if key else {}
        return requests.post(
            self.base + path, data=data, auth=self.auth, headers=headers, timeout=10
        )

    def get(self, path: str) -> dict[str, Any]:
        response = requests.get(self.base + path, auth=self.auth, timeout=10)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def events(self, intent: dict[str, Any], count: int) -> list[dict[str, Any]]:
        """The ``count`` events about ``intent`` (its charge, refunds, dispute), in the order
        the stand-in made them, once all of them have reached the webhook endpoint."""
        ids = {intent["id"]}

        def listed() -> list[dict[str, Any]]:
            return about(self.stand_in.events(), ids)

        wait_until(lambda: len(listed()) >= count, 20, f"{count} events about {intent['id']}")
        events = listed()
        assert len(events) == count, [event["type"] for event in events]
        delivered = self.inbox.wait_for([event["id"] for event in events])
        assert delivered == events  # what was posted, signed, is what the stand-in lists
        return events


@pytest.fixture
def driver(own_stand_in, inbox) -> Driver:
    return Driver(own_stand_in, inbox)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def assert_stripe_shaped(event: dict[str, Any]) -> None:
    assert event["object"] == "event" and event["id"].startswith("evt_")
    assert event["livemode"] is False and event["api_version"]
    assert event["pending_webhooks"] == 1  # our one endpoint
    assert set(event["request"]) == {"id", "idempotency_key"}
    assert isinstance(event["created"], int)


def test_a_partial_then_a_full_refund(driver):
    intent = driver.paid()

    partial = driver.post(
        "/v1/refunds",
        {"payment_intent": intent["id"], "amount": "500", "reason": "requested_by_customer"},
        key="refund-part",
    )
    rest = driver.post("/v1/refunds", {"payment_intent": intent["id"]})

    assert (partial.status_code, rest.status_code) == (200, 200), rest.text
    assert (partial.json()["status"], rest.json()["amount"]) == ("succeeded", 1500)
    events = driver.events(intent, 6)
    assert types(events) == [
        "payment_intent.created",
        "payment_intent.succeeded",
        "charge.refunded",
        "refund.created",
        "charge.refunded",
        "refund.created",
    ]
    for event in events:
        assert_stripe_shaped(event)
    charge, refund = events[2]["data"], events[3]["data"]["object"]
    assert charge["object"]["amount_refunded"] == 500 and charge["object"]["refunded"] is False
    assert charge["previous_attributes"] == {"amount_refunded": 0}
    assert refund["id"] == partial.json()["id"]
    assert (refund["amount"], refund["status"]) == (500, "succeeded")
    assert refund["reason"] == "requested_by_customer"
    assert refund["payment_intent"] == intent["id"]
    assert refund["charge"] == charge["object"]["id"] == intent["latest_charge"]["id"]
    # Both events of one refund name the API call that made it, and its Idempotency-Key.
    assert events[2]["request"] == events[3]["request"]
    assert events[2]["request"]["idempotency_key"] == "refund-part"
    assert events[2]["request"]["id"] == partial.headers["Request-Id"]
    full = events[4]["data"]
    assert (full["object"]["amount_refunded"], full["object"]["refunded"]) == (2000, True)
    assert full["previous_attributes"] == {"amount_refunded": 500, "refunded": False}
    assert events[5]["data"]["object"]["amount"] == 1500


def test_refunding_more_than_is_left_is_stripes_error(driver):
    intent = driver.paid()
    driver.stand_in.refund(intent["id"], 1500)

    too_much = driver.post("/v1/refunds", {"payment_intent": intent["id"], "amount": "501"})
    driver.stand_in.refund(intent["id"])
    nothing_left = driver.post("/v1/refunds", {"payment_intent": intent["id"]})

    assert too_much.status_code == 400
    assert too_much.json()["error"] == {
        "type": "invalid_request_error",
        "code": "amount_too_large",
        "param": "amount",
        "doc_url": "https://docs.stripe.com/error-codes/amount-too-large",
        "message": "Refund amount ($5.01) is greater than unrefunded amount on charge ($5.00)",
    }
    assert nothing_left.status_code == 400
    error = nothing_left.json()["error"]
    assert error["code"] == "charge_already_refunded"
    assert error["message"] == f"Charge {intent['latest_charge']['id']} has already been refunded."
    # The refusals made nothing: two refunds, each with its two events.
    assert types(driver.events(intent, 6))[2:] == ["charge.refunded", "refund.created"] * 2


def test_a_manual_capture_payment_captured_in_part(driver):
    intent = driver.paid(capture_method="manual")

    assert (intent["status"], intent["amount_capturable"]) == ("requires_capture", 2000)
    authorized = driver.events(intent, 2)
    assert types(authorized) == [
        "payment_intent.created",
        "payment_intent.amount_capturable_updated",
    ]
    assert authorized[1]["data"]["object"]["amount_capturable"] == 2000

    captured = driver.stand_in.capture(intent["id"], 1500)

    assert (captured["status"], captured["amount_received"]) == ("succeeded", 1500)
    assert captured["amount_capturable"] == 0
    events = driver.events(intent, 4)
    assert types(events)[2:] == ["charge.captured", "payment_intent.succeeded"]
    charge = events[2]["data"]["object"]
    # The rest is released as Stripe does: in the charge's amounts, with no Refund object.
    assert (charge["amount"], charge["amount_captured"], charge["captured"]) == (2000, 1500, True)
    assert (charge["amount_refunded"], charge["refunded"]) == (500, False)
    assert charge["refunds"]["data"] == []
    assert events[2]["data"]["previous_attributes"]["captured"] is False
    assert events[3]["data"]["object"]["amount_received"] == 1500
    # What was released cannot be refunded, nor captured again.
    over = driver.post("/v1/refunds", {"payment_intent": intent["id"], "amount": "1501"})
    again = driver.post(f"/v1/payment_intents/{intent['id']}/capture", {})
    assert over.json()["error"]["code"] == "amount_too_large"
    assert "($15.00)" in over.json()["error"]["message"]
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "payment_intent_unexpected_state"


def test_capturing_more_than_was_authorized_is_refused(driver):
    intent = driver.paid(capture_method="manual")

    refused = driver.post(
        f"/v1/payment_intents/{intent['id']}/capture", {"amount_to_capture": "2001"}
    )

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "amount_too_large"
    assert driver.stand_in.retrieve(intent["id"])["status"] == "requires_capture"


def test_a_cancelled_payment_and_a_released_authorization(driver):
    unpaid = driver.stand_in.create_payment_intent(700, "usd", {})
    authorized = driver.paid(capture_method="manual")

    canceled = driver.stand_in.cancel(unpaid["id"], "requested_by_customer")
    released = driver.stand_in.cancel(authorized["id"])
    again = driver.post(f"/v1/payment_intents/{unpaid['id']}/cancel", {})

    assert (canceled["status"], canceled["cancellation_reason"]) == (
        "canceled",
        "requested_by_customer",
    )
    assert canceled["canceled_at"] >= canceled["created"]
    event = driver.events(unpaid, 2)[1]
    assert event["type"] == "payment_intent.canceled"
    assert event["data"]["object"]["cancellation_reason"] == "requested_by_customer"
    assert types(driver.events(authorized, 3))[2] == "payment_intent.canceled"
    assert released["latest_charge"]["amount_refunded"] == 2000
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "payment_intent_unexpected_state"
    assert "status of canceled" in again.json()["error"]["message"]


def test_a_fraud_dispute_card_is_disputed_then_won_with_winning_evidence(driver):
    intent = driver.paid(FRAUD_CARD)
    charge_id = intent["latest_charge"]["id"]

    assert intent["status"] == "succeeded"
    opened = driver.events(intent, 4)
    assert types(opened) == [
        "payment_intent.created",
        "payment_intent.succeeded",
        "charge.dispute.created",
        "charge.dispute.funds_withdrawn",
    ]
    dispute = opened[2]["data"]["object"]
    assert dispute["id"].startswith("dp_") and dispute["object"] == "dispute"
    assert (dispute["charge"], dispute["payment_intent"]) == (charge_id, intent["id"])
    assert (dispute["amount"], dispute["currency"]) == (2000, "usd")
    assert (dispute["reason"], dispute["status"]) == ("fraudulent", "needs_response")
    assert dispute["payment_method_details"]["card"]["case_type"] == "chargeback"
    assert dispute["evidence_details"]["due_by"] > dispute["created"] + 6 * 86400
    (withdrawal,) = dispute["balance_transactions"]
    assert (withdrawal["amount"], withdrawal["fee"], withdrawal["net"]) == (-2000, 1500, -3500)
    assert withdrawal["source"] == dispute["id"]
    # Opened by the bank, a moment after the payment: no API call, later timestamps.
    assert opened[2]["request"] == {"id": None, "idempotency_key": None}
    assert dispute["created"] > opened[1]["created"]
    assert driver.get(f"/v1/charges/{charge_id}")["disputed"] is True
    charged_back = driver.post("/v1/refunds", {"payment_intent": intent["id"]})
    assert charged_back.json()["error"]["code"] == "charge_disputed"

    submitted = driver.stand_in.submit_evidence(dispute["id"], "winning_evidence")

    assert submitted["status"] == "under_review"
    events = driver.events(intent, 7)
    assert types(events)[4:] == [
        "charge.dispute.updated",
        "charge.dispute.closed",
        "charge.dispute.funds_reinstated",
    ]
    updated = events[4]["data"]
    assert updated["previous_attributes"]["status"] == "needs_response"
    assert updated["previous_attributes"]["evidence"] == {"uncategorized_text": None}
    assert updated["previous_attributes"]["evidence_details"] == {
        "has_evidence": False,
        "submission_count": 0,
    }
    assert updated["object"]["evidence_details"]["submission_count"] == 1
    closed, reinstated = events[5]["data"]["object"], events[6]["data"]["object"]
    assert closed["status"] == reinstated["status"] == "won"
    assert [txn["amount"] for txn in reinstated["balance_transactions"]] == [-2000, 2000]
    assert {event["data"]["object"]["id"] for event in events[2:]} == {dispute["id"]}
    assert events[5]["created"] > events[4]["created"] > events[3]["created"]
    assert driver.get(f"/v1/disputes/{dispute['id']}")["status"] == "won"


def test_losing_evidence_loses_and_closing_accepts_the_dispute(driver):
    lost_on_evidence = driver.paid(FRAUD_CARD)
    accepted = driver.paid("4000000000002685")
    first = driver.stand_in.dispute_of(lost_on_evidence["id"])
    second = driver.stand_in.dispute_of(accepted["id"])

    driver.stand_in.submit_evidence(first["id"], "losing_evidence")
    closed = driver.stand_in.close_dispute(second["id"])

    assert types(driver.events(lost_on_evidence, 6))[4:] == [
        "charge.dispute.updated",
        "charge.dispute.closed",
    ]
    assert driver.stand_in.dispute_of(lost_on_evidence["id"])["status"] == "lost"
    assert (second["reason"], closed["status"]) == ("product_not_received", "lost")
    last = driver.events(accepted, 5)[-1]
    assert last["type"] == "charge.dispute.closed"
    assert last["data"]["previous_attributes"] == {"status": "needs_response"}
    reopened = driver.post(f"/v1/disputes/{second['id']}/close", {})
    assert reopened.status_code == 400


def test_an_inquiry_withdraws_nothing(driver):
    intent = driver.paid("4000000000001976")

    events = driver.events(intent, 3)

    assert types(events)[2] == "charge.dispute.created"
    inquiry = events[2]["data"]["object"]
    assert (inquiry["status"], inquiry["balance_transactions"]) == ("warning_needs_response", [])
    assert inquiry["payment_method_details"]["card"]["case_type"] == "inquiry"
    assert inquiry["is_charge_refundable"] is True


def test_an_early_fraud_warning(driver):
    intent = driver.paid("4000000000005423")

    events = driver.events(intent, 3)

    assert types(events)[2] == "radar.early_fraud_warning.created"
    warning = events[2]["data"]["object"]
    assert (warning["charge"], warning["payment_intent"]) == (
        intent["latest_charge"]["id"],
        intent["id"],
    )
    assert driver.get(f"/v1/radar/early_fraud_warnings/{warning['id']}")["actionable"] is True


def test_staged_evidence_is_an_update_and_unknown_evidence_is_refused(driver):
    intent = driver.paid(FRAUD_CARD)
    dispute = driver.stand_in.dispute_of(intent["id"])
    path = f"/v1/disputes/{dispute['id']}"

    staged = driver.post(path, {"evidence[customer_name]": "Jenny Rosen", "submit": "false"})
    unknown = driver.post(path, {"evidence[horoscope]": "Leo"})

    assert staged.status_code == 200, staged.text
    assert staged.json()["status"] == "needs_response"
    # Staged, not submitted: the dispute waits for more, as at Stripe.
    assert staged.json()["evidence_details"] == {
        **dispute["evidence_details"],
        "has_evidence": True,
        "submission_count": 0,
    }
    update = driver.events(intent, 5)[4]
    assert update["type"] == "charge.dispute.updated"
    assert update["data"]["previous_attributes"] == {
        "evidence": {"customer_name": None},
        "evidence_details": {"has_evidence": False},
    }
    assert unknown.status_code == 400
    assert unknown.json()["error"]["param"] == "evidence[horoscope]"
