"""Card testing on checkout sessions (shared.payments.card_testing): each failed attempt of a
session's PaymentIntent counted once, the session ended at its limit, the cancel owed."""

from __future__ import annotations

import datetime as dt

import stripe
from sqlalchemy import select

from shared.ledger.handlers.registry import EventView, registry
from shared.models import CheckoutSession
from shared.payments.card_testing import cancel_pending_payments, record_failed_attempt
from shared.payments.handlers.intents import count_checkout_failed_attempt
from tests.fast.checkout_kit import add_session_payment, checkout_session


def _session(db, session_id: str, limit: int = 3) -> None:
    expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with db.begin() as session:
        session.add(checkout_session(session_id, expires_at=expires_at, max_failed_attempts=limit))


def _row(db, session_id: str) -> CheckoutSession:
    with db() as session:
        return session.execute(
            select(CheckoutSession).where(CheckoutSession.id == session_id)
        ).scalar_one()


def test_the_attempt_at_the_limit_ends_the_session_and_owes_a_cancel(db):
    _session(db, "cs_ct1", limit=3)
    ended = []
    for _ in range(4):
        with db.begin() as session:
            ended.append(record_failed_attempt(session, "cs_ct1"))

    row = _row(db, "cs_ct1")
    assert ended == [False, False, True, False]
    assert (row.failed_attempts, row.expired_reason, row.cancel_pending) == (
        4,
        "too_many_failures",
        True,
    )
    assert row.expired_at is not None


def test_a_session_ended_before_keeps_its_reason_and_owes_nothing(db):
    _session(db, "cs_ct2", limit=1)
    with db.begin() as session:
        row = session.get(CheckoutSession, "cs_ct2")
        assert row is not None
        row.expired_at, row.expired_reason = dt.datetime.now(dt.UTC), "expired"
    with db.begin() as session:
        assert record_failed_attempt(session, "cs_ct2") is False
    row = _row(db, "cs_ct2")
    assert (row.expired_reason, row.cancel_pending) == ("expired", False)


def test_only_a_checkout_sessions_payment_failures_are_counted(db):
    _session(db, "cs_ct3", limit=2)

    def failed(caller: str | None) -> EventView:
        metadata = {} if caller is None else {"payments_caller": caller}
        payload = {"data": {"object": {"id": "pi_ct", "metadata": metadata}}}
        return EventView("evt_ct", "payment_intent.payment_failed", None, payload)

    with db.begin() as session:
        for caller in ("session:cs_ct3", "client:shop", None, "session:cs_unknown"):
            count_checkout_failed_attempt(session, failed(caller))

    assert _row(db, "cs_ct3").failed_attempts == 1
    assert "payments.checkout_failed_attempts" in registry.handlers_for(
        "payment_intent.payment_failed"
    )


class Operations:
    """What the sweeper asks of PaymentOperations, answering as told."""

    def __init__(self, *answers: Exception | None) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, str]] = []

    def cancel_unless_paid(self, payment_intent_id: str, key: str, reason: str = "") -> None:
        self.asked.append((payment_intent_id, key))
        answer = self.answers.pop(0)
        if answer is not None:
            raise answer


def _owing(db, session_id: str, intent: str | None) -> None:
    _session(db, session_id, limit=1)
    with db.begin() as session:
        assert record_failed_attempt(session, session_id)
        if intent is not None:
            add_session_payment(session, session_id, intent)


def _owes(db, session_id: str) -> bool:
    return _row(db, session_id).cancel_pending


def test_the_sweeper_cancels_once_and_stops_when_stripe_does_not_answer(db):
    _owing(db, "cs_sw1", "pi_sw1")
    unreachable = Operations(stripe.APIConnectionError("down"))
    assert cancel_pending_payments(db, unreachable) == 0  # type: ignore[arg-type]
    assert _owes(db, "cs_sw1")

    answering = Operations(None)
    assert cancel_pending_payments(db, answering) == 1  # type: ignore[arg-type]
    assert answering.asked == [("pi_sw1", "card-testing-cs_sw1")]
    assert not _owes(db, "cs_sw1")
    assert cancel_pending_payments(db, Operations()) == 0  # type: ignore[arg-type]


def test_a_cancel_stripe_refuses_for_good_or_no_payment_settles_the_debt(db):
    _owing(db, "cs_sw2", "pi_sw2")
    _owing(db, "cs_sw3", None)
    refusing = Operations(stripe.InvalidRequestError("already succeeded", param=None))

    assert cancel_pending_payments(db, refusing) == 2  # type: ignore[arg-type]
    assert not _owes(db, "cs_sw2") and not _owes(db, "cs_sw3")
