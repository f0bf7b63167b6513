"""Refunds and disputes (shared.payments.after_payment): every order of their events ends in
Stripe's last state; a late event never undoes a newer one; ties are Stripe's to settle."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.models import Dispute, Payment, Refund
from shared.payments import apply_payment_intent
from shared.payments.after_payment import (
    apply_dispute,
    apply_refund,
    lifecycle,
    lifecycle_decision,
)
from shared.payments.details import payment_details
from shared.payments.ordering import Decision
from tests.support.stripe_objects import dispute, refund

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
_ids = itertools.count(1)


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _refund_row(db: sessionmaker[Session], refund_id: str) -> Refund:
    with db() as session:
        return session.execute(select(Refund).where(Refund.id == refund_id)).scalar_one()


def _dispute_row(db: sessionmaker[Session], dispute_id: str) -> Dispute:
    with db() as session:
        return session.execute(select(Dispute).where(Dispute.id == dispute_id)).scalar_one()


def test_a_succeeded_refund_never_goes_back_to_pending(db):
    pending = refund("re_late", "pi_r1", 500, "pending")
    succeeded = refund("re_late", "pi_r1", 500, "succeeded")
    with db.begin() as session:
        apply_refund(session, succeeded, at(5))
        # Delivered late, and even stamped later (clocks, retries): behind in the lifecycle.
        assert not apply_refund(session, pending, at(9))

    assert _refund_row(db, "re_late").status == "succeeded"


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_every_order_of_a_refunds_events_ends_in_its_last_state(db, order):
    refund_id = f"re_perm{next(_ids)}"
    states = [("pending", 1), ("succeeded", 2), ("failed", 3)]
    with db.begin() as session:
        for index in order:
            status, second = states[index]
            apply_refund(
                session, refund(refund_id, "pi_r2", 700, status, failure_reason=None), at(second)
            )
    assert _refund_row(db, refund_id).status == "failed"


def _dispute_events(dispute_id: str, outcome: str) -> list[tuple[dict[str, Any], str | None]]:
    """A dispute's events as Stripe sends them, each with its `funds` fact."""
    events = [
        (dispute(dispute_id, "pi_d", "needs_response"), None),
        (dispute(dispute_id, "pi_d", "needs_response"), "withdrawn"),
        (dispute(dispute_id, "pi_d", "under_review"), None),
        (dispute(dispute_id, "pi_d", outcome), None),
    ]
    if outcome == "won":
        events.append((dispute(dispute_id, "pi_d", "won"), "reinstated"))
    return events


@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_every_permutation_of_a_disputes_events_converges(db, outcome):
    for order in itertools.permutations(range(len(_dispute_events("dp_x", outcome)))):
        dispute_id = f"dp_perm{next(_ids)}"
        events = _dispute_events(dispute_id, outcome)
        with db.begin() as session:
            for index in order:
                obj, funds = events[index]
                apply_dispute(session, obj, at(index), funds=funds)
        row = _dispute_row(db, dispute_id)
        assert (row.status, row.funds_withdrawn) == (outcome, True), order
        assert row.funds_reinstated is (outcome == "won"), order
        assert row.evidence_due_by is not None


def test_a_closed_dispute_never_reopens(db):
    with db.begin() as session:
        apply_dispute(session, dispute("dp_closed", "pi_d", "lost"), at(10))
        assert not apply_dispute(session, dispute("dp_closed", "pi_d", "under_review"), at(20))
    assert _dispute_row(db, "dp_closed").status == "lost"


class StripeSays:
    def __init__(self, obj: dict[str, Any] | None) -> None:
        self.obj = obj
        self.asked = 0

    def __call__(self, _id: str) -> dict[str, Any] | None:
        self.asked += 1
        return self.obj


def test_two_endings_of_a_dispute_are_settled_by_asking_stripe(db):
    stripe_now = StripeSays(dispute("dp_tie", "pi_d", "won"))
    with db.begin() as session:
        apply_dispute(session, dispute("dp_tie", "pi_d", "lost"), at(1))
        assert apply_dispute(session, dispute("dp_tie", "pi_d", "won"), at(1), stripe_now)
    assert stripe_now.asked == 1
    assert _dispute_row(db, "dp_tie").status == "won"


def test_a_tie_stripe_cannot_settle_keeps_the_first(db):
    with db.begin() as session:
        apply_refund(session, refund("re_tie", "pi_r3", 100, "failed"), at(1))
        assert not apply_refund(session, refund("re_tie", "pi_r3", 100, "canceled"), at(1))
        assert not apply_refund(
            session, refund("re_tie", "pi_r3", 100, "canceled"), at(1), StripeSays(None)
        )
    assert _refund_row(db, "re_tie").status == "failed"


def test_the_same_state_takes_the_newer_events_fields_only(db):
    with db.begin() as session:
        apply_refund(session, refund("re_same", "pi_r4", 100, "pending", reason=None), at(5))
        apply_refund(session, refund("re_same", "pi_r4", 100, "pending", reason="duplicate"), at(7))
        apply_refund(session, refund("re_same", "pi_r4", 100, "pending", reason=None), at(6))
    row = _refund_row(db, "re_same")
    assert (row.reason, row.status_as_of) == ("duplicate", at(7))


def test_refunds_before_the_payment_show_once_it_is_known(db):
    with db.begin() as session:
        apply_refund(session, refund("re_early1", "pi_early", 300, "succeeded"), at(3))
        apply_refund(session, refund("re_early2", "pi_early", 200, "pending"), at(4))
        apply_refund(session, refund("re_early3", "pi_early", 400, "failed"), at(5))
        intent = {
            "id": "pi_early",
            "status": "succeeded",
            "amount": 1000,
            "currency": "usd",
            "amount_received": 1000,
            "capture_method": "automatic",
        }
        apply_payment_intent(session, intent, at(1))
    with db() as session:
        payment = session.execute(
            select(Payment).where(Payment.payment_intent_id == "pi_early")
        ).scalar_one()
        details = payment_details(session, payment)
    assert [r.id for r in details.refunds] == ["re_early1", "re_early2", "re_early3"]
    # The failed refund gave its money back; the pending one counts, as at Stripe.
    assert details.amount_refunded == 500
    assert (payment.amount_received, payment.capture_method) == (1000, "automatic")


def test_the_lifecycle_rule_itself():
    later = lifecycle(("a", "b", "c"), ("a", "b", "d"), ("e", "a"))
    assert later["e"] == {"a", "b", "c", "d"}  # across paths where they meet
    assert lifecycle_decision(later, "a", at(5), "b", at(1)) is Decision.APPLY
    assert lifecycle_decision(later, "b", at(1), "a", at(5)) is Decision.IGNORE
    assert lifecycle_decision(later, "c", at(1), "d", at(1)) is Decision.TIE
    assert lifecycle_decision(later, "b", at(5), "b", at(1)) is Decision.IGNORE
    assert lifecycle_decision(later, "b", at(1), "b", at(1)) is Decision.APPLY
