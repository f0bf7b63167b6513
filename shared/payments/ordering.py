"""Following Stripe's PaymentIntent status from its events: the ordering rule.

A terminal status is final; otherwise the newer event ``created`` wins; on a same-second tie
between different statuses, Stripe's current object decides, or failing that the lifecycle rank.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from enum import Enum
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.models import Payment
from shared.observability.metrics import PAYMENT_FAILURES, PAYMENT_SUCCESS

log = logging.getLogger(__name__)

# What a payment first seen in an event is inserted with: the intent's fields and _status_fields.
_INSERTED_COLUMNS = (
    "payment_intent_id", "amount", "currency", "metadata", "capture_method", "status",
    "status_as_of", "amount_received", "amount_capturable", "last_error_code",
    "last_error_decline_code", "last_error_message",
)  # fmt: skip

TERMINAL_STATUSES = frozenset({"succeeded", "canceled"})

# When two events carry the same `created` second and Stripe cannot be asked, the one further
# along the PaymentIntent lifecycle wins. Stripe's `created` has one-second resolution, so ties
# are common in a burst. A failed attempt (`requires_payment_method` with an error) comes after
# the `requires_action` or `processing` it failed from.
STATUS_PRECEDENCE = {
    "requires_payment_method": 0,
    "requires_confirmation": 1,
    "requires_action": 2,
    "processing": 3,
    "requires_capture": 5,
    "succeeded": 6,
    "canceled": 6,
}
FAILED_ATTEMPT_PRECEDENCE = 4


def lifecycle_rank(status: str, has_error: bool) -> int:
    if status == "requires_payment_method" and has_error:
        return FAILED_ATTEMPT_PRECEDENCE
    return STATUS_PRECEDENCE.get(status, -1)


class Decision(Enum):
    APPLY = "apply"
    IGNORE = "ignore"
    # Same second, different status: ask Stripe for the PaymentIntent as it is now.
    TIE = "tie"


def decide(
    current_status: str,
    current_has_error: bool,
    current_as_of: dt.datetime | None,
    new_status: str,
    new_has_error: bool,
    new_as_of: dt.datetime,
) -> Decision:
    """Whether an event's status may replace the stored one.

    The rule: a terminal status is final; otherwise the newer `created` wins; on a tie between
    different statuses, Stripe's current object decides, or failing that the lifecycle rank.
    """
    if current_status in TERMINAL_STATUSES:
        return Decision.IGNORE
    if current_as_of is None or new_as_of > current_as_of:
        return Decision.APPLY
    if new_as_of < current_as_of:
        return Decision.IGNORE
    if (new_status, new_has_error) == (current_status, current_has_error):
        return Decision.APPLY
    return Decision.TIE


def should_apply(
    current_status: str,
    current_as_of: dt.datetime | None,
    new_status: str,
    new_as_of: dt.datetime,
    *,
    current_has_error: bool = False,
    new_has_error: bool = False,
) -> bool:
    """The rule without Stripe to ask: ties go to the later lifecycle rank."""
    decision = decide(
        current_status, current_has_error, current_as_of, new_status, new_has_error, new_as_of
    )
    if decision is Decision.TIE:
        return lifecycle_rank(new_status, new_has_error) >= lifecycle_rank(
            current_status, current_has_error
        )
    return decision is Decision.APPLY


def apply_payment_intent(
    session: Session,
    intent: dict[str, Any],
    as_of: dt.datetime,
    fetch_current: Callable[[str], dict[str, Any] | None] | None = None,
) -> bool:
    """Bring our row for a PaymentIntent to the state in ``intent`` unless ours is newer.

    Creates the row for a PaymentIntent made outside this service (the Dashboard, another app).
    Returns whether the stored status changed.
    """
    if _insert_if_new(session, intent, as_of):
        _count_outcome(intent)
        return True
    payment = session.execute(
        select(Payment).where(Payment.payment_intent_id == intent["id"]).with_for_update()
    ).scalar_one()
    winner = _newer_state(payment, intent, as_of, fetch_current)
    if winner is None:
        log.info(
            "payment %s stays %s: event status %s is older",
            payment.payment_intent_id,
            payment.status,
            intent["status"],
        )
        return False
    if payment.status != winner["status"] or winner.get("last_payment_error"):
        _count_outcome(winner)
    for name, value in _status_fields(winner, as_of).items():
        setattr(payment, name, value)
    payment.updated_at = func.now()
    return True


def _insert_if_new(session: Session, intent: dict[str, Any], as_of: dt.datetime) -> bool:
    # Stripe's metadata is an object of strings; anything else is not worth a failure.
    metadata = intent.get("metadata")
    values = {
        "payment_intent_id": intent["id"],
        "amount": int(intent["amount"]),
        "currency": intent["currency"],
        "metadata": metadata if isinstance(metadata, dict) else {},
        "capture_method": None,
        **_status_fields(intent, as_of),
    }
    return session.execute(_INSERT_IF_NEW, values).scalar_one_or_none() is not None


# Built once from bound parameters and sent through Core, not the ORM: every event of a
# PaymentIntent made elsewhere runs it, and building an ORM insert per call cost more than the
# statement itself.
_PAYMENTS = cast(Table, Payment.__table__)
_INSERT_IF_NEW = (
    insert(_PAYMENTS)
    .values({name: bindparam(name, type_=_PAYMENTS.c[name].type) for name in _INSERTED_COLUMNS})
    .on_conflict_do_nothing(index_elements=[_PAYMENTS.c.payment_intent_id])
    .returning(_PAYMENTS.c.id)
)


def _newer_state(
    payment: Payment,
    intent: dict[str, Any],
    as_of: dt.datetime,
    fetch_current: Callable[[str], dict[str, Any] | None] | None,
) -> dict[str, Any] | None:
    """The PaymentIntent state to store (the event's, or Stripe's present one on a tie), or
    None when the stored state is newer."""
    current_has_error = (
        payment.last_error_code is not None or payment.last_error_message is not None
    )
    new_has_error = bool(intent.get("last_payment_error"))
    decision = decide(
        payment.status, current_has_error, payment.status_as_of,
        intent["status"], new_has_error, as_of,
    )  # fmt: skip
    if decision is Decision.APPLY:
        return intent
    if decision is Decision.IGNORE:
        return None
    now = fetch_current(intent["id"]) if fetch_current else None
    if now is not None:
        # Stripe's present state settles which of the two same-second events is later.
        return now
    later = should_apply(
        payment.status, payment.status_as_of, intent["status"], as_of,
        current_has_error=current_has_error, new_has_error=new_has_error,
    )  # fmt: skip
    return intent if later else None


def _count_outcome(intent: dict[str, Any]) -> None:
    error = intent.get("last_payment_error") or {}
    if intent["status"] == "succeeded":
        PAYMENT_SUCCESS.inc()
    elif intent["status"] == "requires_payment_method" and error:
        PAYMENT_FAILURES.labels(
            code=error.get("decline_code") or error.get("code") or "unknown"
        ).inc()


def _status_fields(intent: dict[str, Any], as_of: dt.datetime) -> dict[str, Any]:
    error = intent.get("last_payment_error") or {}
    fields = {
        "status": intent["status"],
        "status_as_of": as_of,
        # Stripe's figures at that moment, moving with the status under the same rule.
        "amount_received": int(intent.get("amount_received") or 0),
        "amount_capturable": int(intent.get("amount_capturable") or 0),
        "last_error_code": error.get("code"),
        "last_error_decline_code": error.get("decline_code"),
        "last_error_message": error.get("message"),
    }
    if intent.get("capture_method"):
        # An object without it (a trimmed stand-in's) keeps what create-payment asked for.
        fields["capture_method"] = intent["capture_method"]
    return fields
