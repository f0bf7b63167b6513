"""Stripe's test cards and what Stripe's test mode does with each at ``confirm``, and after a
payment succeeds (a dispute, an early fraud warning): the one table.

The stand-in (``devtools/stripe_test_mode.py``, ``stripe_disputes.py``), ``payments dev
trigger`` and the tests read it. Codes and messages are Stripe's own words (https://docs.stripe.com/testing#declined-payments);
a customer-facing page rewords them (``api/static/payment.js``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decline:
    code: str
    decline_code: str
    message: str


@dataclass(frozen=True)
class CardDispute:
    """The dispute Stripe opens on a succeeded payment with this card
    (https://docs.stripe.com/testing#disputes)."""

    reason: str
    # needs_response (a chargeback: the funds are withdrawn) or warning_needs_response (an
    # inquiry: nothing is withdrawn yet).
    status: str
    network_reason_code: str

    @property
    def inquiry(self) -> bool:
        return self.status.startswith("warning_")


@dataclass(frozen=True)
class TestCard:
    number: str
    description: str
    # How the charge fails at confirm; None when it succeeds.
    decline: Decline | None = None
    three_d_secure: bool = False
    # What follows a payment that succeeded: a dispute, an early fraud warning.
    dispute: CardDispute | None = None
    early_fraud_warning: bool = False

    __test__ = False  # a table row, not a pytest test class


_DECLINED = "Your card was declined."


def _declined(decline_code: str, message: str = _DECLINED) -> Decline:
    return Decline("card_declined", decline_code, message)


GENERIC_DECLINE = _declined("generic_decline")

CARDS: dict[str, TestCard] = {
    card.number: card
    for card in (
        TestCard("4242424242424242", "succeeds"),
        TestCard("4000000000000002", "declined", GENERIC_DECLINE),
        TestCard(
            "4000000000009995",
            "declined: insufficient funds",
            _declined("insufficient_funds", "Your card has insufficient funds."),
        ),
        TestCard("4000000000009987", "declined: lost card", _declined("lost_card")),
        TestCard("4000000000009979", "declined: stolen card", _declined("stolen_card")),
        TestCard(
            "4000000000000069",
            "declined: expired card",
            Decline("expired_card", "expired_card", "Your card has expired."),
        ),
        TestCard(
            "4000000000000127",
            "declined: incorrect CVC",
            Decline("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."),
        ),
        TestCard(
            "4000000000000119",
            "declined: processing error",
            Decline(
                "processing_error",
                "processing_error",
                "An error occurred while processing your card. Try again in a little bit.",
            ),
        ),
        TestCard(
            "4000000000000341",
            "attaches to a customer, then the charge is declined",
            GENERIC_DECLINE,
        ),
        TestCard("4000002500003155", "3-D Secure required, then succeeds", three_d_secure=True),
        TestCard("4000000000003220", "3-D Secure 2 required, then succeeds", three_d_secure=True),
        TestCard(
            "4000000000000259",
            "succeeds, then disputed as fraudulent (funds withdrawn)",
            dispute=CardDispute("fraudulent", "needs_response", "10.4"),
        ),
        TestCard(
            "4000000000002685",
            "succeeds, then disputed as product not received (funds withdrawn)",
            dispute=CardDispute("product_not_received", "needs_response", "13.1"),
        ),
        TestCard(
            "4000000000001976",
            "succeeds, then an inquiry (a dispute in warning_needs_response)",
            dispute=CardDispute("general", "warning_needs_response", "10.4"),
        ),
        TestCard(
            "4000000000005423",
            "succeeds, then an early fraud warning",
            early_fraud_warning=True,
        ),
    )
}


def card(card_number: str | None) -> TestCard | None:
    return CARDS.get(card_number or "")


def decline_for(card_number: str | None) -> Decline | None:
    found = card(card_number)
    return found.decline if found else None
