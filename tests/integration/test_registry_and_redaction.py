"""The handler registry and what is stored of an event."""

from __future__ import annotations

import pytest

from devtools import stripe_events
from shared.ledger.event_rules import storable_event
from shared.ledger.handlers import HandlerRegistry, UnknownHandler, registry
from shared.payments.handlers.intents import PAYMENT_INTENT_EVENTS


def test_payment_intent_events_have_the_sync_handler():
    for event_type in PAYMENT_INTENT_EVENTS:
        handlers = registry.handlers_for(event_type)
        assert handlers[0] == "payments.sync_payment_intent"
        # A failure is also a checkout session's failed attempt (card testing), and only that.
        failure = ["payments.checkout_failed_attempts"]
        assert handlers[1:] == (failure if event_type == "payment_intent.payment_failed" else [])


def test_unknown_event_type_has_no_handlers():
    assert registry.handlers_for("customer.deleted") == []


def test_one_event_type_fans_out_to_every_handler():
    local = HandlerRegistry()

    @local.handles("invoice.paid", name="a")
    def a(session, event):  # pragma: no cover - registration only
        pass

    @local.handles("invoice.paid", "invoice.created", name="b")
    def b(session, event):  # pragma: no cover - registration only
        pass

    assert local.handlers_for("invoice.paid") == ["a", "b"]
    assert local.handlers_for("invoice.created") == ["b"]
    assert local.get("b") is b


def test_handler_names_are_unique():
    local = HandlerRegistry()
    local.handles("x.y", name="same")(lambda s, e: None)
    with pytest.raises(ValueError, match="same"):
        local.handles("x.z", name="same")(lambda s, e: None)


def test_unknown_handler_name_raises():
    with pytest.raises(UnknownHandler):
        registry.get("no.such.handler")


def test_client_secret_is_removed_before_storing():
    intent = stripe_events.payment_intent(status="succeeded")
    event = stripe_events.event("payment_intent.succeeded", intent)
    event["data"]["previous_attributes"] = {
        "client_secret": "pi_x_secret_y",
        "status": "processing",
    }

    stored = storable_event(event)

    assert "client_secret" not in stored["data"]["object"]
    assert stored["data"]["previous_attributes"] == {"status": "processing"}
    assert stored["data"]["object"]["id"] == intent["id"]
    # The original is left alone: the receiver's raw body is not ours to change.
    assert "client_secret" in event["data"]["object"]


def test_nul_characters_are_replaced_so_postgres_can_store_the_event():
    intent = stripe_events.payment_intent(metadata={"note": "a\x00b"})
    event = stripe_events.event("payment_intent.created", intent)

    stored = storable_event(event)

    assert stored["data"]["object"]["metadata"] == {"note": "a\ufffdb"}
