"""Card testing on checkout sessions (shared.payments.card_testing): each failed attempt of a
session's PaymentIntent counted once, the session ended at its limit, the cancel owed."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from shared.ledger.handlers.payment_intents import count_checkout_failed_attempt
from shared.ledger.handlers.registry import EventView, registry
from shared.models import CheckoutSession
from shared.payments.card_testing import record_failed_attempt


def _session(db, session_id: str, limit: int = 3) -> None:
    with db.begin() as session:
        session.add(
            CheckoutSession(
                id=session_id,
                created_by="client:shop",
                amount=1000,
                currency="usd",
                metadata_={},
                expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
                max_failed_attempts=limit,
            )
        )


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
