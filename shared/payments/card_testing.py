"""Card testing on checkout sessions: a session whose PaymentIntent fails too often is ended,
and its PaymentIntent canceled at Stripe; and the cancels every ended session owes.

No stranger can create PaymentIntents (the back end prices every session), but a browser holding
a session's client secret can confirm its PaymentIntent with card after card, straight at
Stripe. Each ``payment_intent.payment_failed`` of a session's PaymentIntent is counted once (its
handler runs once per event); at the session's ``max_failed_attempts`` the session ends
(``too_many_failures``) and owes Stripe a cancel (``cancel_pending``). The sweeper pays that
debt, outside any transaction: a cancel is a Stripe call, and a crash between the two leaves
the flag set for the next pass. A session that simply ran out of time owes the same cancel
(``CheckoutSessions.end_expired``): its browser still holds the client secret.
"""

from __future__ import annotations

import logging

import stripe
from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.models import CheckoutSession, Payment
from shared.observability.metrics import CHECKOUT_CARD_TESTING
from shared.payments.callers import SESSION_SCOPE_PREFIX, Caller
from shared.payments.operations import PaymentOperations

log = logging.getLogger(__name__)

ENDED_FOR_FAILURES = "too_many_failures"
# Sessions whose cancels one sweeper pass makes at most: the rest wait for the next.
CANCELS_PER_PASS = 100


def checkout_session_of(payments_caller: str | None) -> str | None:
    return None if payments_caller is None else Caller(payments_caller).checkout_session_id


def record_failed_attempt(session: Session, session_id: str) -> bool:
    """Count one failed attempt on the session; True when it is the one that ends it."""
    table = CheckoutSession
    reaches_limit = (table.expired_at.is_(None)) & (
        table.failed_attempts + 1 >= table.max_failed_attempts
    )
    ended = session.execute(
        update(table)
        .where(table.id == session_id)
        .values(
            failed_attempts=table.failed_attempts + 1,
            expired_at=case((reaches_limit, func.now()), else_=table.expired_at),
            expired_reason=case((reaches_limit, ENDED_FOR_FAILURES), else_=table.expired_reason),
            cancel_pending=table.cancel_pending | reaches_limit,
        )
        # The values RETURNING sees are the new ones: a session ended just now is one that
        # owes a cancel and carries this attempt's reason at exactly its limit.
        .returning(
            (table.expired_reason == ENDED_FOR_FAILURES)
            & (table.failed_attempts == table.max_failed_attempts)
        )
    ).scalar_one_or_none()
    return bool(ended)


def cancel_pending_payments(sessions: sessionmaker[Session], operations: PaymentOperations) -> int:
    """Cancel the PaymentIntents that ended sessions (card testing, time) still owe; answers
    how many sessions were settled. A Stripe that does not answer leaves the rest for the next
    pass."""
    with sessions() as session:
        owed = session.execute(
            select(CheckoutSession.id, Payment.payment_intent_id, CheckoutSession.expired_reason)
            .outerjoin(Payment, Payment.caller == SESSION_SCOPE_PREFIX + CheckoutSession.id)
            .where(CheckoutSession.cancel_pending)
            .limit(CANCELS_PER_PASS)
        ).all()
    settled = 0
    for session_id, payment_intent_id, reason in owed:
        card_testing = reason == ENDED_FOR_FAILURES
        if payment_intent_id is not None:
            try:
                _cancel(operations, session_id, payment_intent_id, card_testing=card_testing)
            except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError):
                # Stripe is not answering: the rest wait for the next pass, not a timeout each.
                log.warning("cancel of %s failed; next pass", payment_intent_id)
                break
        with transaction(sessions) as session:
            session.execute(
                update(CheckoutSession)
                .where(CheckoutSession.id == session_id)
                .values(cancel_pending=False)
            )
        if card_testing:
            CHECKOUT_CARD_TESTING.inc()
        settled += 1
    return settled


def cancel_session_payment(
    operations: PaymentOperations,
    session_id: str,
    payment_intent_id: str,
    *,
    card_testing: bool = False,
) -> str:
    """Cancel an ended session's PaymentIntent unless it is paid; answers the reason given.
    One Stripe key per session and cause: a second pass after a crash gets Stripe's first
    answer, and a session expired by its creator and by the clock is canceled once."""
    key, reason = (
        (f"card-testing-{session_id}", "fraudulent")
        if card_testing
        else (f"expire-{session_id}", "abandoned")
    )
    operations.cancel_unless_paid(payment_intent_id, key, reason=reason)
    return reason


def _cancel(
    operations: PaymentOperations, session_id: str, payment_intent_id: str, *, card_testing: bool
) -> None:
    try:
        reason = cancel_session_payment(
            operations, session_id, payment_intent_id, card_testing=card_testing
        )
    except stripe.InvalidRequestError:
        # Stripe refuses for good (it was paid meanwhile, say): nothing left to cancel.
        log.warning("Stripe refused to cancel %s", payment_intent_id, exc_info=True)
        return
    log.warning("session %s ended (%s): %s canceled", session_id, reason, payment_intent_id)
