"""After the payment, at the function level: the lifecycle rule over every pair of Stripe's refund
and dispute statuses, the handlers as registered (charge.refunded, ties asked of Stripe, funds
from balance transactions), the outcome counters, PaymentIntent figures, and the reconciler
recording runs for every new event type."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from shared.ledger.handlers import EventView, registry
from shared.ledger.recovery.reconcile import reconcile
from shared.ledger.runs.task import execute_run
from shared.models import Dispute, Payment, Refund
from shared.payments import (
    apply_dispute,
    apply_payment_intent,
    apply_refund,
    find_payment_details,
)
from shared.payments.after_payment import DISPUTE_LIFECYCLE, REFUND_LIFECYCLE, lifecycle_decision
from shared.payments.ordering import Decision
from tests.fast.ledger_kit import POLICY, SCOPE, make_event
from tests.support.stripe_objects import dispute, refund

T0 = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
_ids = itertools.count(1)

ISSUE_13_EVENTS = (
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "payment_intent.amount_capturable_updated",
    "payment_intent.canceled",
    "payment_intent.partially_funded",
)


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def fresh(prefix: str) -> str:
    return f"{prefix}_{next(_ids)}"


# What Stripe's lifecycles allow, written out rather than derived from the lifecycles under test.
REFUND_MOVES = {
    ("requires_action", "pending"), ("requires_action", "succeeded"),
    ("requires_action", "failed"), ("requires_action", "canceled"),
    ("pending", "succeeded"), ("pending", "failed"), ("pending", "canceled"),
    # Documented by Stripe: a refund to a card that can no longer take it fails after success.
    ("succeeded", "failed"),
}  # fmt: skip
DISPUTE_CLOSED = {"warning_closed", "won", "lost", "charge_refunded", "prevented"}


@pytest.mark.parametrize("current", sorted(REFUND_LIFECYCLE))
@pytest.mark.parametrize("new", sorted(REFUND_LIFECYCLE))
def test_refund_statuses_only_move_forward_whatever_the_stamps(current, new):
    for current_as_of, new_as_of in ((at(5), at(9)), (at(9), at(5))):
        decision = lifecycle_decision(REFUND_LIFECYCLE, current, current_as_of, new, new_as_of)
        if (current, new) in REFUND_MOVES:
            assert decision is Decision.APPLY
        elif (new, current) in REFUND_MOVES:
            assert decision is Decision.IGNORE
        elif new == current:
            assert decision is (Decision.APPLY if new_as_of > current_as_of else Decision.IGNORE)
        else:
            # succeeded or failed against canceled: only Stripe knows which is true.
            assert decision is Decision.TIE, (current, new)


@pytest.mark.parametrize("current", sorted(DISPUTE_CLOSED))
@pytest.mark.parametrize("new", sorted(DISPUTE_LIFECYCLE))
def test_a_closed_dispute_never_reopens(current, new):
    decision = lifecycle_decision(DISPUTE_LIFECYCLE, current, at(1), new, at(99))
    if new == current:
        assert decision is Decision.APPLY
    elif new in DISPUTE_CLOSED or (current == "warning_closed" and "warning" not in new):
        # Two endings, or an inquiry's end against a chargeback's state: Stripe settles it.
        assert decision is Decision.TIE
    else:
        assert decision is Decision.IGNORE


def test_dispute_lifecycles_move_forward():
    inquiry = ["warning_needs_response", "warning_under_review", "warning_closed"]
    escalated = ["warning_needs_response", "needs_response", "under_review", "lost"]
    chargeback = ["warning_under_review", "needs_response", "under_review", "won"]
    for path in (inquiry, escalated, chargeback):
        for earlier, later in itertools.combinations(path, 2):
            assert lifecycle_decision(DISPUTE_LIFECYCLE, earlier, at(9), later, at(1)) is (
                Decision.APPLY
            )
            assert lifecycle_decision(DISPUTE_LIFECYCLE, later, at(1), earlier, at(9)) is (
                Decision.IGNORE
            )


def test_a_status_we_do_not_know_is_for_stripe_to_settle(db, caplog):
    refund_id = fresh("re_unknown")
    with db.begin() as session:
        apply_refund(session, refund(refund_id, "pi_u", 100, "pending"), at(1))
        with caplog.at_level(logging.WARNING):
            # Stripe cannot be asked: what we know stays.
            assert not apply_refund(session, refund(refund_id, "pi_u", 100, "reversed"), at(2))
        stripe_now = StripeNow(refund(refund_id, "pi_u", 100, "reversed"))
        assert apply_refund(
            session, refund(refund_id, "pi_u", 100, "reversed"), at(3), stripe_now.current_refund
        )
    assert "status reversed unknown" in caplog.text
    with db() as session:
        assert session.get(Refund, refund_id).status == "reversed"


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_a_refund_converges_even_when_its_stamps_run_backwards(db, order):
    refund_id = fresh("re_stamps")
    # The operator's answer is stamped with the refund's own created, its events later: here
    # the stamps run against the lifecycle, and the lifecycle still decides.
    states = [("requires_action", 9), ("pending", 5), ("succeeded", 1)]
    with db.begin() as session:
        for index in order:
            status, second = states[index]
            apply_refund(session, refund(refund_id, "pi_s", 100, status), at(second))
    with db() as session:
        assert session.get(Refund, refund_id).status == "succeeded"


class Listed:
    """Stripe's event list, as the reconciler pages it."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def events_since(self, created_gte: int) -> list[dict[str, Any]]:
        return [event for event in self.events if event["created"] >= created_gte]


def _count(name: str, status: str) -> float:
    return REGISTRY.get_sample_value(name, {"status": status}) or 0.0


def test_every_outcome_series_exists_before_its_first_count():
    # Prometheus' increase() misses a series' first sample: the new-dispute alert needs the
    # series at 0 before the first dispute of a process.
    for status in DISPUTE_LIFECYCLE:
        assert REGISTRY.get_sample_value("disputes_total", {"status": status}) is not None
    for status in REFUND_LIFECYCLE:
        assert REGISTRY.get_sample_value("refunds_total", {"status": status}) is not None


class StripeNow:
    """Stripe's refunds and disputes as they are now, by id (what a tie asks)."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {obj["id"]: obj for obj in objects}
        self.asked: list[str] = []

    def current_payment_intent(self, payment_intent_id: str) -> dict[str, Any] | None:
        return None

    def current_refund(self, refund_id: str) -> dict[str, Any] | None:
        self.asked.append(refund_id)
        return self.objects.get(refund_id)

    def current_dispute(self, dispute_id: str) -> dict[str, Any] | None:
        self.asked.append(dispute_id)
        return self.objects.get(dispute_id)


def deliver(session, event_type: str, obj: dict[str, Any], second: int, stripe=None) -> None:
    """Every handler registered for the event type, as the pipeline applies them."""
    event_id = fresh("evt_life")
    payload = {"id": event_id, "type": event_type, "data": {"object": obj}}
    view = EventView(event_id, event_type, at(second), payload, stripe)
    for name in registry.handlers_for(event_type):
        registry.get(name)(session, view)


def test_a_tie_settled_by_stripe_counts_the_state_stripe_gave(db):
    dispute_id = fresh("dp_tie")
    stripe_now = StripeNow(dispute(dispute_id, "pi_t", "lost"))
    won_before, lost_before = _count("disputes_total", "won"), _count("disputes_total", "lost")
    with db.begin() as session:
        deliver(session, "charge.dispute.closed", dispute(dispute_id, "pi_t", "won"), 1)
        deliver(
            session, "charge.dispute.closed", dispute(dispute_id, "pi_t", "lost"), 1, stripe_now
        )
        # A duplicate changes nothing and counts nothing.
        deliver(session, "charge.dispute.closed", dispute(dispute_id, "pi_t", "lost"), 2)
    assert stripe_now.asked == [dispute_id]
    assert (_count("disputes_total", "won"), _count("disputes_total", "lost")) == (
        won_before + 1,
        lost_before + 1,
    )
    with db() as session:
        assert session.get(Dispute, dispute_id).status == "lost"


def test_a_refund_tie_asks_stripe_through_the_handler(db):
    refund_id = fresh("re_tie")
    stripe_now = StripeNow(refund(refund_id, "pi_t", 300, "canceled"))
    with db.begin() as session:
        deliver(session, "refund.failed", refund(refund_id, "pi_t", 300, "failed"), 4)
        deliver(
            session, "refund.updated", refund(refund_id, "pi_t", 300, "canceled"), 4, stripe_now
        )
    assert stripe_now.asked == [refund_id]
    with db() as session:
        assert session.get(Refund, refund_id).status == "canceled"


def _charge(charge_id: str, payment_intent: str, *refunds: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": charge_id,
        "object": "charge",
        "payment_intent": payment_intent,
        "amount": 1000,
        "amount_refunded": sum(r["amount"] for r in refunds),
        "refunds": {"object": "list", "data": list(refunds), "has_more": False},
    }


def test_charge_refunded_records_its_refunds_and_joins_those_without_a_payment_intent(db):
    intent_id, charge_id = fresh("pi_charge"), fresh("ch_refunded")
    # A refund whose events name only its charge (an older API version's, or the stand-in's).
    orphan = refund(fresh("re_orphan"), None, 200, "succeeded", charge=charge_id)
    listed = refund(fresh("re_listed"), None, 300, "pending", charge=None)
    with db.begin() as session:
        deliver(session, "refund.created", orphan, 1)
        deliver(session, "charge.refunded", _charge(charge_id, intent_id, listed), 2)
        apply_payment_intent(session, _intent(intent_id, "succeeded", amount_received=1000), at(0))
        # A later event of the refund without its PaymentIntent does not undo the join.
        deliver(session, "refund.updated", orphan, 3)
    details = find_payment_details(db, intent_id)
    assert details is not None
    assert {(r.id, r.charge_id, r.status) for r in details.refunds} == {
        (orphan["id"], charge_id, "succeeded"),
        (listed["id"], charge_id, "pending"),
    }
    assert details.amount_refunded == 500


def test_a_charge_listing_no_refunds_only_joins(db):
    intent_id, charge_id = fresh("pi_nolist"), fresh("ch_nolist")
    charge = {"id": charge_id, "object": "charge", "payment_intent": intent_id, "refunds": None}
    with db.begin() as session:
        orphan = dispute(fresh("dp_orphan"), None, "needs_response", charge=charge_id)
        apply_dispute(session, orphan, at(1))
        deliver(session, "charge.refunded", charge, 2)
        deliver(session, "charge.refunded", {**charge, "payment_intent": None}, 3)
    with db() as session:
        linked = session.execute(select(Dispute).where(Dispute.charge_id == charge_id)).scalar_one()
    assert linked.payment_intent_id == intent_id


def test_funds_are_read_from_the_disputes_balance_transactions_too(db):
    dispute_id = fresh("dp_bt")
    moved = [{"id": "txn_w", "amount": -1000}, {"id": "txn_r", "amount": 1000}, "txn_unexpanded"]
    closed = dispute(dispute_id, "pi_bt", "won", balance_transactions=moved)
    with db.begin() as session:
        # funds_reinstated was lost (the reconciler would bring it): closed says it all.
        deliver(session, "charge.dispute.closed", {**closed, "is_charge_refundable": False}, 5)
        deliver(session, "charge.dispute.updated", dispute(dispute_id, "pi_bt", "under_review"), 3)
    with db() as session:
        row = session.get(Dispute, dispute_id)
    assert row is not None
    assert (row.status, row.funds_withdrawn, row.funds_reinstated) == ("won", True, True)
    # A field the late event carried does not overwrite the newer state's.
    assert row.is_charge_refundable is False


def test_a_withdrawal_alone_is_no_reinstatement(db):
    dispute_id = fresh("dp_w")
    withdrawn = dispute(dispute_id, "pi_w", "needs_response", balance_transactions=[{"amount": -5}])
    with db.begin() as session:
        deliver(session, "charge.dispute.funds_withdrawn", withdrawn, 1)
        deliver(session, "charge.dispute.created", dispute(dispute_id, "pi_w", "needs_response"), 0)
    with db() as session:
        row = session.get(Dispute, dispute_id)
    assert row is not None and (row.funds_withdrawn, row.funds_reinstated) == (True, False)


def _intent(intent_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"id": intent_id, "status": status, "amount": 1000, "currency": "usd", **extra}


def _payment(db, intent_id: str) -> Payment:
    with db() as session:
        return session.execute(
            select(Payment).where(Payment.payment_intent_id == intent_id)
        ).scalar_one()


def test_a_manual_capture_payment_keeps_stripes_figures_under_the_ordering_rule(db):
    intent_id = fresh("pi_manual")
    authorized = _intent(intent_id, "requires_capture", capture_method="manual",
                         amount_capturable=1000)  # fmt: skip
    captured = _intent(intent_id, "succeeded", capture_method="manual", amount_received=600)
    with db.begin() as session:
        deliver(session, "payment_intent.amount_capturable_updated", authorized, 1)
        deliver(session, "payment_intent.succeeded", captured, 2)
        # Late: the PaymentIntent is final, and its figures with it.
        deliver(session, "payment_intent.amount_capturable_updated", authorized, 1)
    payment = _payment(db, intent_id)
    assert (payment.status, payment.capture_method) == ("succeeded", "manual")
    assert (payment.amount_received, payment.amount_capturable) == (600, 0)


def test_a_canceled_authorization_releases_what_was_capturable(db):
    intent_id = fresh("pi_cancel")
    with db.begin() as session:
        authorized = _intent(intent_id, "requires_capture", capture_method="manual",
                             amount_capturable=1000)  # fmt: skip
        deliver(session, "payment_intent.amount_capturable_updated", authorized, 1)
        # An object without capture_method keeps the one we know.
        deliver(session, "payment_intent.canceled", _intent(intent_id, "canceled"), 2)
    payment = _payment(db, intent_id)
    assert (payment.status, payment.capture_method, payment.amount_capturable) == (
        "canceled",
        "manual",
        0,
    )


def test_partially_funded_keeps_the_payment_waiting(db):
    intent_id = fresh("pi_funded")
    with db.begin() as session:
        deliver(
            session, "payment_intent.partially_funded", _intent(intent_id, "requires_action"), 1
        )
    assert _payment(db, intent_id).status == "requires_action"


def test_the_latest_of_several_disputes_is_the_payments_dispute(db):
    intent_id = fresh("pi_two")
    first = dispute(fresh("dp_first"), intent_id, "lost", created=1_800_000_000)
    second = dispute(fresh("dp_second"), intent_id, "needs_response", created=1_800_000_100)
    with db.begin() as session:
        apply_payment_intent(session, _intent(intent_id, "succeeded"), at(0))
        apply_dispute(session, second, at(2))
        apply_dispute(session, first, at(1))
    details = find_payment_details(db, intent_id)
    assert details is not None and details.dispute is not None
    assert details.dispute.id == second["id"]
    assert find_payment_details(db, fresh("pi_unknown")) is None


def test_every_new_event_type_has_its_handler_and_the_reconciler_records_its_runs(db, cipher):
    assert set(ISSUE_13_EVENTS) <= set(registry.event_types())
    intent_id = fresh("pi_recon")
    objects = {
        "charge.refunded": _charge(fresh("ch_recon"), intent_id),
        "refund.created": refund(fresh("re_recon"), intent_id, 100, "pending"),
        "charge.dispute.created": dispute(fresh("dp_recon"), intent_id, "needs_response"),
        "payment_intent.canceled": _intent(intent_id, "canceled"),
    }
    listed = {
        event_type: make_event(event_type, created=1_700_099_000 + index)
        for index, event_type in enumerate(ISSUE_13_EVENTS)
    }
    for event_type, obj in objects.items():
        listed[event_type]["data"]["object"] = obj
    result = reconcile(
        db,
        Listed(list(listed.values())),
        overlap_seconds=300,
        lookback_seconds=3600,
        cipher=cipher,
        scope=SCOPE,
        now=lambda: 1_700_100_000.0,
    )

    assert {(event_id, handler) for event_id, handler in result.pending_runs} == {
        (event["id"], name)
        for event_type, event in listed.items()
        for name in registry.handlers_for(event_type)
    }
    for event_type in objects:
        (handler,) = registry.handlers_for(event_type)
        execute_run(db, listed[event_type]["id"], handler, cipher, None, policy=POLICY)
    details = find_payment_details(db, intent_id)
    assert details is not None and details.payment.status == "canceled"
    assert [r.status for r in details.refunds] == ["pending"]
    assert details.dispute is not None and details.dispute.status == "needs_response"
