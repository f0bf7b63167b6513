"""``payments dev trigger EVENT``: like ``stripe trigger``, for the stand-in.

Each scenario makes its objects at the stand-in directly (as ``stripe trigger`` makes them at
Stripe) and drives them to the named event through the stand-in's API: a refund, a capture, a
cancellation, or a payment with one of Stripe's dispute test cards, after which the stand-in
opens the dispute itself and, given Stripe's test evidence (``winning_evidence``,
``losing_evidence``), closes it. The stand-in posts its signed events to the registered
webhook, and the pipeline records them like any payment made outside this service. The dispute
objects are built from Stripe's example Dispute and name the scenario's own charge and
PaymentIntent (``devtools/stripe_disputes.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devtools.standin import StandIn

AMOUNT = 2000
CURRENCY = "usd"
PARTIAL_CAPTURE = 1500
SUCCEEDS = "4242424242424242"
DISPUTED_AS_FRAUD = "4000000000000259"
EARLY_FRAUD_WARNING = "4000000000005423"

PAID = ("payment_intent.created", "payment_intent.succeeded")
AUTHORIZED = ("payment_intent.created", "payment_intent.amount_capturable_updated")
DISPUTED = (*PAID, "charge.dispute.created", "charge.dispute.funds_withdrawn")


@dataclass(frozen=True)
class Triggered:
    intent: dict[str, Any]
    dispute: dict[str, Any] | None = None


Run = Callable[[StandIn, dict[str, Any]], Triggered]


@dataclass(frozen=True)
class Scenario:
    description: str
    run: Run
    # The events Stripe sends for it, in order.
    events: tuple[str, ...]
    capture_method: str | None = None


def _pay_with(card: str) -> Run:
    def run(stand_in: StandIn, intent: dict[str, Any]) -> Triggered:
        return Triggered(stand_in.pay(intent["id"], card))

    return run


def _refund(stand_in: StandIn, intent: dict[str, Any]) -> Triggered:
    stand_in.pay(intent["id"], SUCCEEDS)
    stand_in.refund(intent["id"], reason="requested_by_customer")
    return Triggered(stand_in.retrieve(intent["id"]))


def _capture_part(stand_in: StandIn, intent: dict[str, Any]) -> Triggered:
    stand_in.pay(intent["id"], SUCCEEDS)
    return Triggered(stand_in.capture(intent["id"], PARTIAL_CAPTURE))


def _cancel(stand_in: StandIn, intent: dict[str, Any]) -> Triggered:
    return Triggered(stand_in.cancel(intent["id"], "requested_by_customer"))


def _dispute(evidence: str | None, outcome: str | None = None) -> Run:
    def run(stand_in: StandIn, intent: dict[str, Any]) -> Triggered:
        paid = stand_in.pay(intent["id"], DISPUTED_AS_FRAUD)
        dispute = stand_in.dispute_of(intent["id"])
        if evidence is not None:
            stand_in.submit_evidence(dispute["id"], evidence)
            dispute = stand_in.dispute_of(intent["id"], status=outcome)
        return Triggered(paid, dispute)

    return run


SCENARIOS: dict[str, Scenario] = {
    "payment_intent.succeeded": Scenario(
        "a payment with 4242424242424242 that succeeds", _pay_with(SUCCEEDS), PAID
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
    "charge.refunded": Scenario(
        "a payment, then refunded in full (requested_by_customer)",
        _refund,
        (*PAID, "charge.refunded", "refund.created"),
    ),
    "payment_intent.amount_capturable_updated": Scenario(
        "a manual-capture payment, authorized and waiting for capture",
        _pay_with(SUCCEEDS),
        AUTHORIZED,
        capture_method="manual",
    ),
    "charge.captured": Scenario(
        f"a manual-capture payment of {AMOUNT}, {PARTIAL_CAPTURE} captured and the rest released",
        _capture_part,
        (*AUTHORIZED, "charge.captured", "payment_intent.succeeded"),
        capture_method="manual",
    ),
    "payment_intent.canceled": Scenario(
        "a payment cancelled before it was paid (requested_by_customer)",
        _cancel,
        ("payment_intent.created", "payment_intent.canceled"),
    ),
    "charge.dispute.created": Scenario(
        f"a payment with {DISPUTED_AS_FRAUD}, then disputed as fraudulent",
        _dispute(None),
        DISPUTED,
    ),
    "charge.dispute.funds_reinstated": Scenario(
        f"a payment with {DISPUTED_AS_FRAUD}, disputed, then won with winning_evidence",
        _dispute("winning_evidence", "won"),
        (
            *DISPUTED,
            "charge.dispute.updated",
            "charge.dispute.closed",
            "charge.dispute.funds_reinstated",
        ),
    ),
    "charge.dispute.closed": Scenario(
        f"a payment with {DISPUTED_AS_FRAUD}, disputed, then lost with losing_evidence",
        _dispute("losing_evidence", "lost"),
        (*DISPUTED, "charge.dispute.updated", "charge.dispute.closed"),
    ),
    "radar.early_fraud_warning.created": Scenario(
        f"a payment with {EARLY_FRAUD_WARNING}, then an early fraud warning",
        _pay_with(EARLY_FRAUD_WARNING),
        (*PAID, "radar.early_fraud_warning.created"),
    ),
}


class UnknownScenario(LookupError):
    pass


def trigger(stand_in: StandIn, event: str) -> Triggered:
    """Run the scenario for ``event``; returns the PaymentIntent (and the dispute) as the
    stand-in has them at the end."""
    scenario = SCENARIOS.get(event)
    if scenario is None:
        raise UnknownScenario(f"no scenario for {event!r}; known: {', '.join(SCENARIOS)}")
    intent = stand_in.create_payment_intent(
        AMOUNT,
        CURRENCY,
        {"source": "payments dev trigger", "scenario": event},
        capture_method=scenario.capture_method,
    )
    return scenario.run(stand_in, intent)
