"""Sessions whose time is up (CheckoutSessions.end_expired): ended once, owing Stripe a cancel
only when they have a PaymentIntent."""

from __future__ import annotations

import datetime as dt

from shared.models import CheckoutSession
from shared.payments.checkout_sessions import CheckoutSessions
from tests.fast.checkout_kit import add_session_payment, checkout_session
from tests.fast.conftest import FAST_KEY

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def _session(db, session_id: str, expires_in: dt.timedelta, *, paid_with: str | None = None):
    with db.begin() as session:
        created_at, expires_at = NOW - dt.timedelta(days=1), NOW + expires_in
        session.add(checkout_session(session_id, created_at=created_at, expires_at=expires_at))
        if paid_with is not None:
            add_session_payment(session, session_id, paid_with)


def test_sessions_whose_time_is_up_end_once_and_owe_a_cancel_if_they_have_a_payment(db):
    _session(db, "cs_due_paid", -dt.timedelta(minutes=1), paid_with="pi_due")
    _session(db, "cs_due_unpaid", -dt.timedelta(seconds=1))
    _session(db, "cs_open", dt.timedelta(hours=1))
    sessions = CheckoutSessions(db, (FAST_KEY,), clock=lambda: NOW)

    assert sessions.end_expired() == 2
    assert sessions.end_expired() == 0

    with db() as session:
        rows = {row.id: row for row in session.query(CheckoutSession)}
    assert (rows["cs_due_paid"].expired_reason, rows["cs_due_paid"].cancel_pending) == (
        "expired",
        True,
    )
    assert (rows["cs_due_unpaid"].expired_reason, rows["cs_due_unpaid"].cancel_pending) == (
        "expired",
        False,
    )
    assert rows["cs_due_paid"].expired_at == NOW - dt.timedelta(minutes=1)
    assert rows["cs_open"].expired_at is None
