"""Refunds and disputes from their events: the ordering rule after the payment.

A refund or a dispute only moves forward: a refund goes ``requires_action`` -> ``pending`` ->
``succeeded`` -> (rarely, for a card that can no longer take it, as Stripe documents)
``failed``, or from ``requires_action`` or ``pending`` to ``canceled``; a dispute goes
``warning_needs_response`` -> ``warning_under_review`` -> ``warning_closed``, or (a chargeback,
or an inquiry escalated) ``needs_response`` -> ``under_review`` -> ``won`` or ``lost`` (or
``charge_refunded``, ``prevented``).

So the rule follows the lifecycle, not the events' ``created`` as for PaymentIntents (which do
go back: a failed attempt returns to ``requires_payment_method``): a state that can come after
ours replaces it whatever the events' order or stamps, and one that can only come before it
never does (a succeeded refund does not go back to pending, a closed dispute never reopens). In
a lifecycle that only moves forward the later state is the newer one, and the lifecycle also
holds where stamps disagree (an operator's answer is stamped with the refund's own ``created``,
its events a second later). The same state again takes the newer event's fields. Two states
neither of which can follow the other (``won`` and ``lost``, a ``failed`` and a ``canceled``
refund, a status this release does not know) are settled by asking Stripe for the object as it
is now, or, when Stripe cannot be asked, by keeping the first. Every permutation of a set of
events so converges to the last state, which is Stripe's.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.infra.timeutil import utc_from_timestamp
from shared.models import Dispute, Refund
from shared.observability.metrics import DISPUTES, REFUNDS
from shared.payments.ordering import Decision

log = logging.getLogger(__name__)

Fetch = Callable[[str], dict[str, Any] | None]
Lifecycle = Mapping[str, frozenset[str]]


def lifecycle(*paths: tuple[str, ...]) -> Lifecycle:
    """Each status with every status that can come after it, along the ``paths`` and from one
    path onto another where they meet."""
    later: dict[str, set[str]] = {}
    for path in paths:
        for index, status in enumerate(path):
            later.setdefault(status, set()).update(path[index + 1 :])
    grown = True
    while grown:
        grown = False
        for after in later.values():
            reachable = set().union(*(later[status] for status in after))
            grown = grown or not reachable <= after
            after |= reachable
    return {status: frozenset(after) for status, after in later.items()}


REFUND_LIFECYCLE = lifecycle(
    ("requires_action", "pending", "succeeded", "failed"),
    ("requires_action", "pending", "canceled"),
)
DISPUTE_LIFECYCLE = lifecycle(
    ("warning_needs_response", "warning_under_review", "warning_closed"),
    ("warning_needs_response", "warning_under_review", "needs_response", "under_review", "won"),
    ("needs_response", "under_review", "lost"),
    ("needs_response", "under_review", "charge_refunded"),
    ("needs_response", "under_review", "prevented"),
)
# A refund counts against the payment from creation until it fails or is canceled, as in
# Stripe's charge.amount_refunded.
REFUND_COUNTS = frozenset({"requires_action", "pending", "succeeded"})

# Every outcome's series exists at 0 from the start, so that Prometheus' increase() sees the
# first refund or dispute a process records (a series born at 1 shows no increase), which the
# new-dispute alert depends on.
for _status in REFUND_LIFECYCLE:
    REFUNDS.labels(status=_status)
for _status in DISPUTE_LIFECYCLE:
    DISPUTES.labels(status=_status)


def lifecycle_decision(
    later: Lifecycle, current: str, current_as_of: dt.datetime, new: str, as_of: dt.datetime
) -> Decision:
    """Whether an object's new state may replace the stored one: APPLY, IGNORE, or TIE (two
    states neither of which can follow the other, for Stripe to settle)."""
    if new == current:
        return Decision.APPLY if as_of >= current_as_of else Decision.IGNORE
    if new in later.get(current, ()):
        return Decision.APPLY
    if current in later.get(new, ()):
        return Decision.IGNORE
    return Decision.TIE


def refund_fields(refund: dict[str, Any]) -> dict[str, Any]:
    return {
        "payment_intent_id": refund.get("payment_intent"),
        "charge_id": refund.get("charge"),
        "amount": int(refund["amount"]),
        "currency": refund["currency"],
        "status": refund["status"],
        "reason": refund.get("reason"),
        "failure_reason": refund.get("failure_reason"),
    }


def dispute_fields(dispute: dict[str, Any]) -> dict[str, Any]:
    due = (dispute.get("evidence_details") or {}).get("due_by")
    return {
        "payment_intent_id": dispute.get("payment_intent"),
        "charge_id": dispute.get("charge"),
        "amount": int(dispute["amount"]),
        "currency": dispute["currency"],
        "status": dispute["status"],
        "reason": dispute.get("reason"),
        "evidence_due_by": None if due is None else utc_from_timestamp(due),
        "is_charge_refundable": dispute.get("is_charge_refundable"),
    }


# Fields whose null is Stripe's word (no reason given, no failure); any other field null or
# missing in an object (a Charge's trimmed list, an older API version's) keeps what we had.
_CLEARABLE = frozenset({"reason", "failure_reason"})


def apply_state(
    session: Session,
    model: type[Refund] | type[Dispute],
    obj: dict[str, Any],
    as_of: dt.datetime,
    fetch_current: Fetch | None,
) -> str | None:
    """Bring our row for a refund or dispute ``obj`` to its state unless its lifecycle puts ours
    later. Returns the status it moved to, or None when the stored status did not change."""
    fields_of = refund_fields if model is Refund else dispute_fields
    fields = fields_of(obj)
    values = {"id": obj["id"], "created": utc_from_timestamp(obj["created"]), **fields}
    inserted = session.execute(
        insert(model)
        .values(status_as_of=as_of, **values)
        .on_conflict_do_nothing(index_elements=[model.id])
        .returning(model.id)
    ).scalar_one_or_none()
    if inserted is not None:
        return str(fields["status"])
    locked = select(model).where(model.id == obj["id"]).with_for_update()
    row = cast(Refund | Dispute, session.execute(locked).scalar_one())
    later = REFUND_LIFECYCLE if model is Refund else DISPUTE_LIFECYCLE
    if fields["status"] not in later:
        log.warning("%s %s: status %s unknown, for Stripe to settle", model.__tablename__,
                    obj["id"], fields["status"])  # fmt: skip
    decision = lifecycle_decision(later, row.status, row.status_as_of, fields["status"], as_of)
    if decision is Decision.TIE:
        now = fetch_current(obj["id"]) if fetch_current else None
        if now is None:
            return None  # Stripe cannot be asked: the first of the two stays
        fields = fields_of(now)
    elif decision is Decision.IGNORE:
        return None
    before = row.status
    for name, value in fields.items():
        if value is not None or name in _CLEARABLE:
            setattr(row, name, value)
    row.status_as_of = max(row.status_as_of, as_of)
    row.updated_at = func.now()
    return None if row.status == before else row.status


def apply_refund(
    session: Session, refund: dict[str, Any], as_of: dt.datetime, fetch_current: Fetch | None = None
) -> bool:
    """Record a Stripe Refund (from its events, a Charge's list, or an operator's answer).
    Returns whether its stored status changed."""
    reached = apply_state(session, Refund, refund, as_of, fetch_current)
    if reached is not None:
        REFUNDS.labels(status=reached).inc()
    return reached is not None


def apply_charge_refunds(
    session: Session, charge: dict[str, Any], as_of: dt.datetime, fetch_current: Fetch | None = None
) -> None:
    """Record what a Charge (of ``charge.refunded``) says of its refunds: each one it lists
    (API versions before 2022-11-15 list them; later ones send refund.* events for each), and
    its PaymentIntent for refunds and disputes of the charge that came without it."""
    payment_intent = charge.get("payment_intent")
    for listed in (charge.get("refunds") or {}).get("data") or []:
        refund = {**listed, "charge": listed.get("charge") or charge["id"]}
        refund["payment_intent"] = listed.get("payment_intent") or payment_intent
        apply_refund(session, refund, as_of, fetch_current)
    link_charge(session, charge["id"], payment_intent)


def link_charge(session: Session, charge_id: str | None, payment_intent_id: str | None) -> None:
    """Tie refunds and disputes recorded with their charge only to the charge's PaymentIntent,
    so the payment's view finds them."""
    if not charge_id or not payment_intent_id:
        return
    for model in (Refund, Dispute):
        session.execute(
            update(model)
            .where(model.charge_id == charge_id, model.payment_intent_id.is_(None))
            .values(payment_intent_id=payment_intent_id, updated_at=func.now())
        )


def apply_dispute(
    session: Session,
    dispute: dict[str, Any],
    as_of: dt.datetime,
    fetch_current: Fetch | None = None,
    *,
    funds: str | None = None,
) -> bool:
    """Record a Stripe Dispute. ``funds`` ('withdrawn' or 'reinstated') comes from the events
    that say so; the dispute's balance_transactions say it too (a withdrawal is negative, a
    reinstatement positive). Either is a fact that stays true whatever order events come in.
    Returns whether its stored status changed."""
    reached = apply_state(session, Dispute, dispute, as_of, fetch_current)
    if reached is not None:
        DISPUTES.labels(status=reached).inc()
    moved = [
        int(transaction.get("amount") or 0)
        for transaction in dispute.get("balance_transactions") or []
        if isinstance(transaction, dict)
    ]
    withdrawn = funds == "withdrawn" or any(amount < 0 for amount in moved)
    reinstated = funds == "reinstated" or any(amount > 0 for amount in moved)
    if withdrawn or reinstated:
        row = session.get(Dispute, dispute["id"], with_for_update=True)
        assert row is not None  # apply_state wrote or locked it
        row.funds_withdrawn = row.funds_withdrawn or withdrawn
        row.funds_reinstated = row.funds_reinstated or reinstated
    link_charge(session, dispute.get("charge"), dispute.get("payment_intent"))
    return reached is not None
