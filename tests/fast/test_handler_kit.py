"""The handler authors' test kit (devtools.handler_testing, a pytest plugin): an event delivered
through the real ledger and registry shows each run and the effects asked for; twice, it
changes nothing; a handler that fails after asking leaves no effect; out of order, each
delivery is applied once."""

from __future__ import annotations

# The test handlers (tests.outbox asks for an email and an HTTP call), in the process registry.
import tests.support.test_handlers  # noqa: F401


def test_a_delivery_shows_its_runs_and_the_effects_asked_for(payments_kit):
    event = payments_kit.event("test.outbox", to="kit@example.com", url="https://hooks.example/x")
    delivered = payments_kit.deliver(event)
    assert delivered.runs == {"tests.outbox": "done"}
    receipt = delivered.effects["tests.outbox", "receipt"]
    assert receipt.kind == "email" and receipt.payload["to"] == "kit@example.com"
    notice = delivered.effects["tests.outbox", "notice"]
    assert notice.payload == {
        "url": "https://hooks.example/x",
        "json": {"object": event["data"]["object"]["id"]},
        "headers": {},
    }
    assert receipt.idempotency_key != notice.idempotency_key


def test_the_same_event_twice_asks_for_its_effects_once(payments_kit):
    event = payments_kit.event("test.outbox", to="kit@example.com", url="https://hooks.example/x")
    first, second = payments_kit.deliver_twice(event)
    assert first == second
    assert len(second.effects) == 2


def test_a_handler_that_fails_after_asking_leaves_no_effect(payments_kit):
    event = payments_kit.event(
        "test.outbox", to="kit@example.com", url="https://x.example", fail_after_asking=True
    )
    delivered = payments_kit.deliver(event)
    assert delivered.runs == {"tests.outbox": "dead"}
    assert "failed after asking" in delivered.errors["tests.outbox"]
    assert delivered.effects == {}


def test_events_out_of_order_are_each_applied_once(payments_kit):
    later = payments_kit.event("test.outbox", to="b@example.com", url="https://x.example/b")
    earlier = payments_kit.event("test.outbox", to="a@example.com", url="https://x.example/a")
    results = payments_kit.deliver_in_order(later, earlier)
    assert [r.runs for r in results] == [{"tests.outbox": "done"}] * 2
    assert payments_kit.event("payment_intent.succeeded")["data"]["object"]["object"] == (
        "payment_intent"
    )
