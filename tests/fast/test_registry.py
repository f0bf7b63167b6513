"""The handler registry, a registry of the test's own, and our PaymentIntent handler called
directly with an event and, for a same-second tie, a reader of Stripe's current object."""

from __future__ import annotations

import datetime as dt
import importlib
import sys
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.ledger.handlers import (
    EventView,
    HandlerRegistry,
    UnknownHandler,
    load_handler_modules,
    registry,
)
from shared.models import Payment
from shared.payments.handlers.intents import PAYMENT_INTENT_EVENTS, sync_payment_intent

# The module (its name is shadowed by the registry object it defines, in the package).
registry_module = importlib.import_module("shared.ledger.handlers.registry")


def nothing(session: Session, event: EventView) -> None:
    return None


def another(session: Session, event: EventView) -> None:
    return None


def test_a_handler_is_found_by_each_type_it_names_and_by_its_name():
    local = HandlerRegistry()
    local.handles("invoice.paid", "invoice.voided", name="billing.close")(nothing)
    local.handles("invoice.paid", name="billing.email")(another)

    assert local.handlers_for("invoice.paid") == ["billing.close", "billing.email"]
    assert local.handlers_for("invoice.voided") == ["billing.close"]
    assert local.handlers_for("charge.refunded") == []
    assert local.get("billing.email") is another
    assert local.names() == ["billing.close", "billing.email"]
    # What Stripe must send us, each type once.
    assert local.event_types() == ["invoice.paid", "invoice.voided"]


def test_the_list_handed_out_cannot_change_the_registry():
    local = HandlerRegistry()
    local.handles("invoice.paid", name="billing.close")(nothing)
    local.handlers_for("invoice.paid").append("intruder")
    local.handlers_for("charge.refunded")
    assert local.handlers_for("invoice.paid") == ["billing.close"]
    # Asking about a type no handler wants does not make it one Stripe must send.
    assert local.event_types() == ["invoice.paid"]


def test_a_name_is_one_handler_for_ever():
    local = HandlerRegistry()
    local.handles("invoice.paid", name="billing.close")(nothing)
    # The same function again (a module imported twice) is harmless, and counted once.
    local.handles("invoice.paid", name="billing.close")(nothing)
    assert local.handlers_for("invoice.paid") == ["billing.close"]

    with pytest.raises(ValueError, match="already registered"):
        local.handles("invoice.voided", name="billing.close")(another)
    with pytest.raises(ValueError, match="at least one event type"):
        local.handles(name="billing.nothing")
    with pytest.raises(UnknownHandler):
        local.get("billing.clsoe")


def test_handler_modules_register_on_import_and_a_missing_one_fails_loudly(monkeypatch):
    # Imported afresh, with a registry of this test's own in place of the process-wide one.
    local = HandlerRegistry()
    monkeypatch.setattr(registry_module, "registry", local)
    monkeypatch.delitem(sys.modules, "tests.support.newcomer_handlers", raising=False)

    load_handler_modules(("tests.support.newcomer_handlers",))

    assert local.handlers_for("customer.created") == ["tests.customer_seen"]
    with pytest.raises(ModuleNotFoundError):
        load_handler_modules(("tests.support.no_such_handlers",))


def test_our_payment_intent_handler_follows_every_payment_intent_event():
    for event_type in PAYMENT_INTENT_EVENTS:
        assert "payments.sync_payment_intent" in registry.handlers_for(event_type)
    assert registry.get("payments.sync_payment_intent") is sync_payment_intent


class StripeNow:
    """Stripe's PaymentIntents as they are now."""

    def __init__(self, **intents: dict[str, Any]) -> None:
        self.intents = intents
        self.asked: list[str] = []

    def current_payment_intent(self, payment_intent_id: str) -> dict[str, Any] | None:
        self.asked.append(payment_intent_id)
        return self.intents.get(payment_intent_id)

    def current_refund(self, refund_id: str) -> dict[str, Any] | None:
        return self.intents.get(refund_id)

    def current_dispute(self, dispute_id: str) -> dict[str, Any] | None:
        return self.intents.get(dispute_id)


def intent(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "pi_handler", "status": status, "amount": 900, "currency": "eur", **extra}


def view(obj: dict[str, Any], second: int, stripe: StripeNow | None = None) -> EventView:
    created = dt.datetime.fromtimestamp(1_700_000_000 + second, dt.UTC)
    payload = {"id": f"evt_h{second}", "data": {"object": obj}}
    return EventView(f"evt_h{second}", "payment_intent.processing", created, payload, stripe)


def stored(db) -> Payment:
    with db() as session:
        return session.execute(
            select(Payment).where(Payment.payment_intent_id == "pi_handler")
        ).scalar_one()


def test_the_handler_records_a_payment_made_elsewhere_and_follows_it(db):
    with db.begin() as session:
        sync_payment_intent(session, view(intent("processing", metadata={"o": "1"}), 1))
    payment = stored(db)
    assert (payment.status, payment.amount, payment.currency) == ("processing", 900, "eur")
    assert payment.metadata_ == {"o": "1"}

    with db.begin() as session:
        sync_payment_intent(session, view(intent("succeeded"), 2))
    assert stored(db).status == "succeeded"


def test_on_a_same_second_tie_the_handler_asks_stripe(db):
    declined = intent("requires_payment_method", last_payment_error={"code": "card_declined"})
    stripe_now = StripeNow(pi_handler=declined)
    with db.begin() as session:
        sync_payment_intent(session, view(intent("processing"), 1, stripe_now))
        sync_payment_intent(session, view(intent("requires_action"), 1, stripe_now))

    assert stripe_now.asked == ["pi_handler"]
    assert (stored(db).status, stored(db).last_error_code) == (
        "requires_payment_method",
        "card_declined",
    )
