"""Refunds and disputes from their events: the ordering rule after the payment.

A refund or a dispute only moves forward: a refund goes ``requires_action`` -> ``pending`` ->
``succeeded`` -> (rarely, for a card that can no longer take it) ``failed``, or is
``canceled``; a dispute goes ``warning_needs_response`` -> ``warning_under_review`` -> (an
inquiry escalated) ``needs_response`` -> ``under_review`` -> ``won`` or ``lost`` (or
``warning_closed``). So the rule is by rank: a state further along replaces ours whatever the
events' order; one behind it never does (a succeeded refund does not go back to pending, a
closed dispute never reopens); the same state again takes the newer event's fields. Two
different states of one rank (``won`` and ``lost`` both claimed) are settled by asking Stripe
for the object as it is now, or, when Stripe cannot be asked, by keeping the first. Every
permutation of a set of events so converges to the furthest state, which is Stripe's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.infra.timeutil import utc_from_timestamp
from shared.models import Dispute, Refund
from shared.observability.metrics import DISPUTES, REFUNDS

Fetch = Callable[[str], dict[str, Any] | None]

REFUND_RANK = {"requires_action": 0, "pending": 1, "succeeded": 2, "failed": 3, "canceled": 3}
DISPUTE_RANK = {
    "warning_needs_response": 0,
    "warning_under_review": 1,
    "needs_response": 2,
    "under_review": 3,
    "warning_closed": 4,
    "won": 4,
    "lost": 4,
    "charge_refunded": 4,
    "prevented": 4,
}
# A refund counts against the payment from creation until it fails or is canceled, as in
# Stripe's charge.amount_refunded.
REFUND_COUNTS = frozenset({"requires_action", "pending", "succeeded"})


def rank_decision(
    ranks: Mapping[str, int], current: str, current_as_of: dt.datetime, new: str, as_of: dt.datetime
) -> str:
    """'apply', 'ignore' or 'tie' for an object's new state against the stored one."""
    new_rank, current_rank = ranks.get(new, -1), ranks.get(current, -1)
    if new_rank != current_rank:
        return "apply" if new_rank > current_rank else "ignore"
    if new != current:
        return "tie"
    return "apply" if as_of >= current_as_of else "ignore"


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
    }


def apply_state(
    session: Session,
    model: type[Refund] | type[Dispute],
    fields: dict[str, Any],
    obj: dict[str, Any],
    as_of: dt.datetime,
    fetch_current: Fetch | None,
) -> bool:
    """Bring our row for a refund or dispute ``obj`` (its ``fields``) to its state unless ours
    is further along. Returns whether the stored status changed."""
    values = {"id": obj["id"], "created": utc_from_timestamp(obj["created"]), **fields}
    inserted = session.execute(
        insert(model)
        .values(status_as_of=as_of, **values)
        .on_conflict_do_nothing(index_elements=[model.id])
        .returning(model.id)
    ).scalar_one_or_none()
    if inserted is not None:
        return True
    locked = select(model).where(model.id == obj["id"]).with_for_update()
    row = cast(Refund | Dispute, session.execute(locked).scalar_one())
    ranks = REFUND_RANK if model is Refund else DISPUTE_RANK
    decision = rank_decision(ranks, row.status, row.status_as_of, fields["status"], as_of)
    if decision == "tie":
        now = fetch_current(obj["id"]) if fetch_current else None
        if now is None:
            return False  # Stripe cannot be asked: the first of the two stays
        fields = refund_fields(now) if model is Refund else dispute_fields(now)
    elif decision == "ignore":
        return False
    changed = row.status != fields["status"]
    for name, value in fields.items():
        # An object of an older API version may lack a field a newer event carried.
        if value is not None or name in ("reason", "failure_reason"):
            setattr(row, name, value)
    row.status_as_of = max(row.status_as_of, as_of)
    row.updated_at = func.now()
    return changed


def apply_refund(
    session: Session, refund: dict[str, Any], as_of: dt.datetime, fetch_current: Fetch | None = None
) -> bool:
    """Record a Stripe Refund (from its events, a Charge's list, or an operator's answer)."""
    changed = apply_state(session, Refund, refund_fields(refund), refund, as_of, fetch_current)
    if changed:
        REFUNDS.labels(status=refund["status"]).inc()
    return changed


def apply_dispute(
    session: Session,
    dispute: dict[str, Any],
    as_of: dt.datetime,
    fetch_current: Fetch | None = None,
    *,
    funds: str | None = None,
) -> bool:
    """Record a Stripe Dispute; ``funds`` ('withdrawn' or 'reinstated') from the events that
    say so, a fact that stays true whatever order the events come in."""
    changed = apply_state(session, Dispute, dispute_fields(dispute), dispute, as_of, fetch_current)
    if changed:
        DISPUTES.labels(status=dispute["status"]).inc()
    if funds is not None:
        row = session.get(Dispute, dispute["id"], with_for_update=True)
        assert row is not None  # apply_state wrote or locked it
        setattr(row, f"funds_{funds}", True)
    return changed
