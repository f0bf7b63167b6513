"""``payments dev trigger EVENT``: like ``stripe trigger``, for the stand-in.

Each scenario makes its objects at the stand-in directly (as ``stripe trigger`` makes them at
Stripe) and drives them to the named event; the stand-in then posts its signed events to the
registered webhook, and the pipeline records them like any payment made outside this service.
New scenarios (a refund, once refunds exist) are one more entry in ``SCENARIOS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.dev.standin import StandIn

AMOUNT = 2000
CURRENCY = "usd"


@dataclass(frozen=True)
class Scenario:
    description: str
    run: Callable[[StandIn, dict[str, Any]], dict[str, Any]]
    # The events Stripe sends for it, in order.
    events: tuple[str, ...]


def _pay_with(card: str) -> Callable[[StandIn, dict[str, Any]], dict[str, Any]]:
    def run(stand_in: StandIn, intent: dict[str, Any]) -> dict[str, Any]:
        return stand_in.pay(intent["id"], card)

    return run


SCENARIOS: dict[str, Scenario] = {
    "payment_intent.succeeded": Scenario(
        "a payment with 4242424242424242 that succeeds",
        _pay_with("4242424242424242"),
        ("payment_intent.created", "payment_intent.succeeded"),
    ),
    "payment_intent.payment_failed": Scenario(
        "a payment with 4000000000000002, declined (generic_decline)",
        _pay_with("4000000000000002"),
        ("payment_intent.created", "payment_intent.payment_failed"),
    ),
    "payment_intent.requires_action": Scenario(
        "a payment with 4000002500003155, waiting for 3-D Secure "
        "(complete it with `payments dev authenticate`)",
        _pay_with("4000002500003155"),
        ("payment_intent.created", "payment_intent.requires_action"),
    ),
}


class UnknownScenario(LookupError):
    pass


def trigger(stand_in: StandIn, event: str) -> dict[str, Any]:
    """Run the scenario for ``event``; returns the PaymentIntent as the stand-in has it."""
    scenario = SCENARIOS.get(event)
    if scenario is None:
        raise UnknownScenario(f"no scenario for {event!r}; known: {', '.join(SCENARIOS)}")
    intent = stand_in.create_payment_intent(
        AMOUNT, CURRENCY, {"source": "payments dev trigger", "scenario": event}
    )
    return scenario.run(stand_in, intent)
