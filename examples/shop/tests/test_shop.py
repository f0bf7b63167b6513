"""The shop's handlers on the handler kit (payments_kit, the service's pytest plugin): the real
ledger and registry, on PostgreSQL, in a transaction rolled back after each test."""

from __future__ import annotations

import pytest
from shop.orders import create_order
from sqlalchemy import text


def status(kit, order_id: int) -> str:
    with kit.sessions() as session:
        return str(
            session.execute(
                text("SELECT status FROM shop_orders WHERE id = :id"), {"id": order_id}
            ).scalar_one()
        )


def an_order(kit, amount: int = 1999, currency: str = "eur") -> tuple[int, str]:
    with kit.sessions.begin() as session:
        order_id = create_order(
            session, "pi_shop_" + str(id(kit)), amount, currency, "ada@example.com"
        )
    return order_id, "pi_shop_" + str(id(kit))


def paid(kit, intent_id: str, amount: int = 1999, currency: str = "eur") -> dict:
    return kit.event(
        "payment_intent.succeeded",
        id=intent_id,
        amount=amount,
        amount_received=amount,
        currency=currency,
        status="succeeded",
    )


def test_a_paid_order_is_marked_paid_and_its_receipt_asked_for_once(payments_kit):
    order_id, intent_id = an_order(payments_kit)
    first, second = payments_kit.deliver_twice(paid(payments_kit, intent_id))
    assert first.runs["shop.mark_paid"] == "done"
    assert status(payments_kit, order_id) == "paid"
    receipt = first.effects["shop.mark_paid", "receipt"]
    assert receipt.kind == "email"
    assert receipt.payload["to"] == "ada@example.com"
    assert "1999 EUR" in receipt.payload["text"]
    assert second.effects == first.effects


def test_a_payment_of_another_amount_does_not_pay_the_order(payments_kit):
    order_id, intent_id = an_order(payments_kit)
    delivered = payments_kit.deliver(paid(payments_kit, intent_id, amount=100))
    assert delivered.runs["shop.mark_paid"] == "done"
    assert status(payments_kit, order_id) == "amount_mismatch"
    assert ("shop.mark_paid", "receipt") not in delivered.effects


def test_a_payment_that_is_not_the_shops_is_left_alone(payments_kit):
    delivered = payments_kit.deliver(paid(payments_kit, "pi_someone_else"))
    assert delivered.runs["shop.mark_paid"] == "done"
    assert delivered.effects == {}


@pytest.mark.parametrize("configured", [True, False])
def test_a_dispute_is_posted_to_the_shops_webhook_once(payments_kit, monkeypatch, configured):
    if configured:
        monkeypatch.setenv("SHOP_DISPUTE_WEBHOOK_URL", "https://shop.example/disputes")
    event = payments_kit.event("charge.dispute.created", amount=1999, charge="ch_shop")
    first, second = payments_kit.deliver_twice(event)
    alert = first.effects.get(("shop.dispute_alert", "dispute-alert"))
    if not configured:
        assert alert is None
        return
    assert alert is not None
    assert alert.payload["url"] == "https://shop.example/disputes"
    assert alert.payload["json"]["charge"] == "ch_shop"
    assert second.effects == first.effects
