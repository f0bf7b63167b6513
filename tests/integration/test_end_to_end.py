"""The whole path on real parts: our API, the stand-in, its signed webhooks, Redis, a Celery
worker process and PostgreSQL. A payment's status in GET /api/payments/<id> follows Stripe's."""

from __future__ import annotations

import secrets
import time

import pytest
from sqlalchemy import select

from devtools import stripe_events
from devtools.cards import CARDS
from devtools.processes import wait_until
from shared.infra.crypto import PayloadCipher
from shared.ledger.event_rows import stored_payload
from shared.ledger.handlers import registry
from shared.models import HandlerRun, Payment, StripeEvent
from tests.conftest import WEBHOOK_SECRET


def new_payment(api, amount: int = 1000) -> str:
    response = api.create_payment(
        {"amount": amount, "currency": "usd", "metadata": {"orderId": secrets.token_hex(4)}}
    )
    assert response.status_code == 200, response.text
    return response.json()["paymentIntentId"]


def runs_of(sessions, event_id: str) -> list[HandlerRun]:
    with sessions() as session:
        return list(
            session.execute(select(HandlerRun).where(HandlerRun.event_id == event_id)).scalars()
        )


def wait_for_runs_done(sessions, event_id: str, timeout: float = 20) -> list[HandlerRun]:
    def done() -> bool:
        runs = runs_of(sessions, event_id)
        return bool(runs) and all(run.status == "done" for run in runs)

    wait_until(done, timeout, f"handler runs of {event_id} done", interval=0.2)
    return runs_of(sessions, event_id)


def test_card_4242_succeeds(api, stand_in, sessions, settings):
    intent_id = new_payment(api)

    stand_in.pay(intent_id, "4242424242424242")

    view = api.wait_for_status(intent_id, "succeeded")
    assert view["lastError"] is None
    assert view["amount"] == 1000
    with sessions() as session:
        events = session.execute(
            select(StripeEvent).where(StripeEvent.type == "payment_intent.succeeded")
        ).scalars()
        cipher = PayloadCipher(settings.encryption_keys)
        payloads = [(e, stored_payload(e, cipher)) for e in events]
        ours = [(e, p) for e, p in payloads if p["data"]["object"]["id"] == intent_id]
    assert len(ours) == 1
    assert ours[0][0].source == "webhook"
    # Stripe puts the client secret in PaymentIntent events; it must not reach the database.
    assert "client_secret" not in ours[0][1]["data"]["object"]


def stand_in_events_of(stand_in, intent_id: str) -> list[str]:
    return [e["type"] for e in stand_in.events() if e["data"]["object"].get("id") == intent_id]


def wait_for_stand_in_events(stand_in, intent_id: str, expected: list[str]) -> None:
    wait_until(
        lambda: stand_in_events_of(stand_in, intent_id) == expected,
        10,
        f"the stand-in's events {expected} for {intent_id}",
        interval=0.2,
    )


DECLINE_CARDS = [card for card in CARDS.values() if card.decline is not None]


@pytest.mark.parametrize("card", DECLINE_CARDS, ids=lambda card: card.number[-4:])
def test_every_decline_card_is_declined_at_confirm_and_reaches_our_ledger(api, stand_in, card):
    # Before the stand-in was taught Stripe's test mode, all but 0341 succeeded here.
    intent_id = new_payment(api)

    intent = stand_in.pay(intent_id, card.number)

    assert intent["status"] == "requires_payment_method"
    assert intent["last_payment_error"]["type"] == "card_error"
    view = api.wait_for_decline(intent_id)
    assert view["status"] == "requires_payment_method"
    assert view["lastError"] == {
        "code": card.decline.code,
        "declineCode": card.decline.decline_code,
        "message": card.decline.message,
    }
    wait_for_stand_in_events(
        stand_in, intent_id, ["payment_intent.created", "payment_intent.payment_failed"]
    )


@pytest.mark.parametrize("card", ["4000002500003155", "4000000000003220"])
def test_three_d_secure_card_requires_action_then_succeeds_after_authentication(
    api, stand_in, card
):
    intent_id = new_payment(api)

    intent = stand_in.pay(intent_id, card)

    assert intent["status"] == "requires_action"
    # The stand-in's own payment_intent.requires_action event, as Stripe sends it.
    api.wait_for_status(intent_id, "requires_action")

    stand_in.authenticate(intent_id)

    api.wait_for_status(intent_id, "succeeded")
    wait_for_stand_in_events(
        stand_in,
        intent_id,
        ["payment_intent.created", "payment_intent.requires_action", "payment_intent.succeeded"],
    )


def test_failed_authentication_is_a_failed_payment(api, stand_in):
    intent_id = new_payment(api)
    stand_in.pay(intent_id, "4000002500003155")

    intent = stand_in.authenticate(intent_id, success=False)

    assert intent["status"] == "requires_payment_method"
    view = api.wait_for_decline(intent_id)
    assert view["lastError"]["code"] == "payment_intent_authentication_failure"


def test_a_new_card_after_a_decline_pays_the_same_payment_intent(api, stand_in):
    # Stripe's recommended retry: confirm the same PaymentIntent again with another card.
    intent_id = new_payment(api)
    assert stand_in.pay(intent_id, "4000000000000002")["status"] == "requires_payment_method"
    api.wait_for_decline(intent_id)

    intent = stand_in.pay(intent_id, "4242424242424242")

    assert intent["status"] == "succeeded"
    assert intent["last_payment_error"] is None
    view = api.wait_for_status(intent_id, "succeeded")
    assert view["lastError"] is None


def test_same_event_twice_is_applied_once(api, sessions, settle):
    intent_id = new_payment(api)
    event = stripe_events.event(
        "payment_intent.succeeded",
        stripe_events.payment_intent(intent_id=intent_id, status="succeeded"),
        created=int(time.time()) + 1,
    )
    body, headers = stripe_events.signed(event, WEBHOOK_SECRET)

    first = api.post_webhook(body, headers)
    second = api.post_webhook(body, headers)

    assert first.status_code == second.status_code == 200
    api.wait_for_status(intent_id, "succeeded")
    wait_for_runs_done(sessions, event["id"])
    # Both deliveries were queued before their 200s: once the worker has settled, both have
    # been ingested and every handler task either of them queued (or re-queued) has run.
    settle()
    runs = runs_of(sessions, event["id"])
    assert [(r.handler, r.status, r.attempts, r.replays) for r in runs] == [
        ("payments.sync_payment_intent", "done", 1, 0)
    ]
    with sessions() as session:
        count = len(
            session.execute(select(StripeEvent.id).where(StripeEvent.id == event["id"])).all()
        )
    assert count == 1


def test_events_out_of_order_converge_to_the_later_status(api, sessions):
    intent_id = new_payment(api)
    now = int(time.time())
    processing = stripe_events.event(
        "payment_intent.processing",
        stripe_events.payment_intent(intent_id=intent_id, status="processing"),
        created=now + 1,
    )
    succeeded = stripe_events.event(
        "payment_intent.succeeded",
        stripe_events.payment_intent(intent_id=intent_id, status="succeeded"),
        created=now + 2,
    )

    # The later event arrives first; the earlier one arrives late.
    assert api.post_webhook(*stripe_events.signed(succeeded, WEBHOOK_SECRET)).status_code == 200
    api.wait_for_status(intent_id, "succeeded")
    assert api.post_webhook(*stripe_events.signed(processing, WEBHOOK_SECRET)).status_code == 200
    wait_for_runs_done(sessions, processing["id"])

    assert api.payment(intent_id).json()["status"] == "succeeded"


def test_same_second_tie_prefers_the_later_lifecycle_status(api, sessions):
    # A PaymentIntent Stripe cannot be asked about (the stand-in never saw it), so the tie is
    # settled by the lifecycle rank alone.
    intent_id = stripe_events.new_id("pi")
    created = int(time.time()) + 1
    first = stripe_events.event(
        "payment_intent.created",
        stripe_events.payment_intent(intent_id=intent_id),
        created=created - 5,
    )
    assert api.post_webhook(*stripe_events.signed(first, WEBHOOK_SECRET)).status_code == 200
    wait_for_runs_done(sessions, first["id"])
    events = [
        stripe_events.event(
            f"payment_intent.{name}",
            stripe_events.payment_intent(intent_id=intent_id, status=status),
            created=created,
        )
        for name, status in (("succeeded", "succeeded"), ("processing", "processing"))
    ]
    for event in events:
        assert api.post_webhook(*stripe_events.signed(event, WEBHOOK_SECRET)).status_code == 200
    for event in events:
        wait_for_runs_done(sessions, event["id"])

    assert api.payment(intent_id).json()["status"] == "succeeded"


def test_payment_created_elsewhere_is_recorded_from_its_event(api, sessions):
    # A PaymentIntent made in the Dashboard reaches us first through its webhook.
    intent = stripe_events.payment_intent(status="processing", amount=777, currency="eur")
    event = stripe_events.event("payment_intent.processing", intent)

    assert api.post_webhook(*stripe_events.signed(event, WEBHOOK_SECRET)).status_code == 200

    view = api.wait_for_status(intent["id"], "processing")
    assert (view["amount"], view["currency"]) == (777, "eur")
    with sessions() as session:
        row = session.execute(
            select(Payment).where(Payment.payment_intent_id == intent["id"])
        ).scalar_one()
    assert row.idempotency_key is None


def test_unknown_event_type_is_recorded_and_acknowledged_without_runs(api, sessions):
    event = stripe_events.event("customer.deleted", stripe_events.resource("customer"))

    response = api.post_webhook(*stripe_events.signed(event, WEBHOOK_SECRET))

    assert response.status_code == 200

    def recorded() -> bool:
        with sessions() as session:
            return session.get(StripeEvent, event["id"]) is not None

    wait_until(recorded, 20, "unknown event recorded", interval=0.2)
    # Runs are inserted in the transaction that records the event: once it is visible, its runs
    # are final, so no wait is needed to know none will appear. The check means something only
    # while no handler is registered for the type; a known type has its runs (other tests).
    assert registry.handlers_for("customer.deleted") == []
    assert runs_of(sessions, event["id"]) == []


def test_same_second_tie_is_settled_by_asking_stripe(api, stand_in, sessions):
    # At the stand-in this PaymentIntent really is waiting for 3-D Secure.
    intent_id = new_payment(api)
    assert stand_in.pay(intent_id, "4000002500003155")["status"] == "requires_action"
    created = int(time.time()) + 1
    # Two events in one second; ranking alone would pick processing, Stripe says otherwise.
    requires_action, processing = (
        stripe_events.event(
            f"payment_intent.{status}",
            stripe_events.payment_intent(intent_id=intent_id, status=status),
            created=created,
        )
        for status in ("requires_action", "processing")
    )
    for event in (requires_action, processing):
        assert api.post_webhook(*stripe_events.signed(event, WEBHOOK_SECRET)).status_code == 200
        wait_for_runs_done(sessions, event["id"])

    assert api.payment(intent_id).json()["status"] == "requires_action"
