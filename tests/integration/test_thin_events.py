"""Thin events (v2.core.event: a related object, no data) through the real receiver, worker and
ledger, the related object fetched from the stand-in by the worker: a payment's thin event
brings its status; a thin event and its snapshot twin are one event for the ledger; a related
object that is gone is recorded as such."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select

from devtools import stripe_events
from devtools.processes import wait_until
from shared.infra.crypto import PayloadCipher
from shared.ledger.event_rows import stored_payload
from shared.models import HandlerRun, StripeEvent
from tests.conftest import WEBHOOK_SECRET


def thin_event(event_type: str, related_id: str, kind: str, path: str, **fields: Any) -> dict:
    return {
        "id": stripe_events.new_id("evt"),
        "object": "v2.core.event",
        "type": event_type,
        "created": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        "livemode": False,
        "related_object": {"id": related_id, "type": kind, "url": f"/v1/{path}/{related_id}"},
        **fields,
    }


def post(api, event: dict) -> None:
    response = api.post_webhook(*stripe_events.signed(event, WEBHOOK_SECRET))
    assert response.status_code == 200, response.text


@contextmanager
def stand_in_silent(stand_in, live_api) -> Iterator[None]:
    """The stand-in's own (snapshot) webhooks sent nowhere: only the thin event tells us."""
    stand_in.register_webhook("http://127.0.0.1:9/webhook")
    try:
        yield
    finally:
        stand_in.register_webhook(f"{live_api.url}/webhook")


def recorded(sessions, event_id: str) -> StripeEvent | None:
    with sessions() as session:
        return session.get(StripeEvent, event_id)


def runs(sessions, event_id: str) -> dict[str, tuple[str, int]]:
    with sessions() as session:
        rows = session.scalars(select(HandlerRun).where(HandlerRun.event_id == event_id))
        return {run.handler: (run.status, run.attempts) for run in rows}


def test_a_payments_thin_event_brings_its_status_from_the_fetched_object(
    api, stand_in, live_api, worker
):
    created = api.create_payment(
        {"amount": 1500, "currency": "usd", "metadata": {"orderId": secrets.token_hex(4)}}
    )
    intent_id = created.json()["paymentIntentId"]
    api.wait_for_status(intent_id, "requires_payment_method")
    with stand_in_silent(stand_in, live_api):
        stand_in.pay(intent_id, "4242424242424242")
        post(
            api,
            thin_event(
                "v1.payment_intent.succeeded", intent_id, "payment_intent", "payment_intents"
            ),
        )
        view = api.wait_for_status(intent_id, "succeeded")
    assert view["amount"] == 1500


def test_a_thin_event_and_its_snapshot_twin_are_applied_once(api, sessions, settings, worker):
    created = api.create_payment({"amount": 700, "currency": "usd"})
    intent_id = created.json()["paymentIntentId"]
    intent = stripe_events.payment_intent(intent_id=intent_id, amount=700)
    snapshot = stripe_events.event("payment_intent.created", intent)
    thin = thin_event(
        "v1.payment_intent.created",
        intent_id,
        "payment_intent",
        "payment_intents",
        snapshot_event=snapshot["id"],
    )
    # The thin event first, recorded under its twin's id with the object fetched; then the
    # snapshot twin, which must change nothing.
    post(api, thin)
    wait_until(lambda: recorded(sessions, snapshot["id"]) is not None, 20, "the thin event")
    post(api, snapshot)
    wait_until(
        lambda: (
            f"event {snapshot['id']} (payment_intent.created) already recorded" in worker.output()
        ),
        20,
        "the snapshot twin ingested",
    )
    row = recorded(sessions, snapshot["id"])
    assert row is not None and recorded(sessions, thin["id"]) is None
    payload = stored_payload(row, PayloadCipher(settings.encryption_keys))
    assert payload["thin_event"] == thin["id"]
    assert payload["data"]["object"]["id"] == intent_id
    assert payload["data"]["object"]["amount"] == 700
    wait_until(
        lambda: all(status == "done" for status, _ in runs(sessions, snapshot["id"]).values()),
        20,
        "the twin's runs done",
    )
    assert {attempts for _, attempts in runs(sessions, snapshot["id"]).values()} == {1}


def test_a_thin_event_of_a_type_no_handler_needs_is_recorded_with_what_is_left(
    api, sessions, worker
):
    thin = thin_event("v1.customer.updated", "cus_gone", "customer", "customers")
    post(api, thin)
    wait_until(lambda: recorded(sessions, thin["id"]) is not None, 20, "the thin event recorded")
    assert runs(sessions, thin["id"]) == {}


def test_a_thin_event_without_its_related_object_is_refused(api):
    thin = thin_event("v1.payment_intent.succeeded", "pi_x", "payment_intent", "payment_intents")
    del thin["related_object"]
    response = api.post_webhook(*stripe_events.signed(thin, WEBHOOK_SECRET))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_event"
