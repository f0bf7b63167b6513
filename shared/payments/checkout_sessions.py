"""Checkout sessions: the merchant's back end prices an order, and the browser only pays it.

As Stripe's own Checkout Sessions: an API client creates a session with the amount, currency,
metadata and capture method; the answer carries the session's token (and a page URL that holds
it), which the browser shows to create (or replay) the session's one PaymentIntent. A browser can
name no other values: a create-payment body that differs from the session is refused, field by
field. A session ends when it expires, when its creator expires it, or once its payment has
succeeded (or, for manual capture, is authorized).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.models import CheckoutSession, Payment
from shared.payments.callers import SESSION_SCOPE_PREFIX, new_session_token
from shared.validation import (
    ALLOWED_FIELDS,
    CheckoutOrder,
    PaymentRequest,
    ValidationError,
    validate_payment_request,
)

SESSION_ID_PREFIX = "cs_"
# The customer has paid (or, for manual capture, authorized): the session is complete.
COMPLETE_STATUSES = frozenset({"succeeded", "requires_capture"})
# Stripe's default capture method, which a session that named none charges with.
DEFAULT_CAPTURE_METHOD = "automatic"


class CheckoutSessionNotFound(Exception):
    """No session with this id, or not one the asking client made."""


class CheckoutSessionGone(Exception):
    """The session can no longer be paid (410): ``code`` says whether it expired or completed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CheckoutSessionMismatch(Exception):
    """A create-payment body named a value other than the session's."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field} differs from the checkout session's")
        self.field = field


@dataclass(frozen=True)
class IssuedSession:
    id: str
    token: str
    expires_at: dt.datetime

    @property
    def url(self) -> str:
        # The token rides in the fragment, which browsers never send: it stays out of every
        # server's and proxy's access log, as Stripe's own Checkout URLs keep theirs.
        return f"/checkout/{self.id}#{self.token}"


@dataclass(frozen=True)
class OpenSession:
    """A session that may still be paid, as the page shows it."""

    id: str
    amount: int
    currency: str
    expires_at: dt.datetime


class CheckoutSessions:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        encryption_keys: tuple[str, ...],
        *,
        max_failed_attempts: int = 5,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._sessions = session_factory
        self._keys = encryption_keys
        self._max_failed_attempts = max_failed_attempts
        self._now = clock

    def create(self, order: CheckoutOrder, created_by: str) -> IssuedSession:
        now = self._now().replace(microsecond=0)
        session_id = SESSION_ID_PREFIX + secrets.token_urlsafe(24)
        expires_at = now + dt.timedelta(seconds=order.expires_in_seconds)
        with transaction(self._sessions) as session:
            session.add(
                CheckoutSession(
                    id=session_id,
                    created_by=created_by,
                    amount=order.payment.amount,
                    currency=order.payment.currency,
                    metadata_=order.payment.metadata,
                    capture_method=order.payment.capture_method,
                    created_at=now,
                    expires_at=expires_at,
                    max_failed_attempts=self._max_failed_attempts,
                )
            )
        token = new_session_token(session_id, int(now.timestamp()), self._keys)
        return IssuedSession(session_id, token, expires_at)

    def open_session(self, session_id: str) -> OpenSession:
        """The session, if it may still be paid; CheckoutSessionNotFound or CheckoutSessionGone."""
        with self._sessions() as session:
            row, payment_status = self._with_payment_status(session, session_id)
        self._check_open(row, payment_status)
        return OpenSession(row.id, row.amount, row.currency, row.expires_at)

    def payment_request(self, session_id: str, body: dict[str, Any]) -> PaymentRequest:
        """What the session's PaymentIntent is created with. ``body`` may name any of its
        values (all must match) or none."""
        with self._sessions() as session:
            row, payment_status = self._with_payment_status(session, session_id)
        self._check_open(row, payment_status)
        ordered = PaymentRequest(
            amount=row.amount,
            currency=row.currency,
            metadata=dict(row.metadata_),
            capture_method=row.capture_method,
        )
        _check_matches(ordered, body)
        return ordered

    def expire(self, session_id: str, created_by: str, reason: str) -> str | None:
        """End the session now (idempotent). Answers the PaymentIntent it had, if any, so
        the caller can cancel it at Stripe: ending the session must stop the payment too."""
        with transaction(self._sessions) as session:
            row = session.get(CheckoutSession, session_id, with_for_update=True)
            if row is None or row.created_by != created_by:
                raise CheckoutSessionNotFound(session_id)
            if row.expired_at is None:
                row.expired_at = self._now()
                row.expired_reason = reason
            return session.execute(
                select(Payment.payment_intent_id).where(
                    Payment.caller == SESSION_SCOPE_PREFIX + session_id
                )
            ).scalar_one_or_none()

    def end_expired(self, *, limit: int = 1000) -> int:
        """Mark sessions whose time is up as ended, owing Stripe the cancel of their unpaid
        PaymentIntent (the sweeper pays it): their browser still holds its client secret. Answers
        how many were ended."""
        has_payment = exists().where(Payment.caller == SESSION_SCOPE_PREFIX + CheckoutSession.id)
        due = (
            select(CheckoutSession.id)
            .where(CheckoutSession.expired_at.is_(None), CheckoutSession.expires_at <= self._now())
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        with transaction(self._sessions) as session:
            ended = session.execute(
                update(CheckoutSession)
                .where(CheckoutSession.id.in_(due))
                .values(
                    expired_at=CheckoutSession.expires_at,
                    expired_reason="expired",
                    cancel_pending=has_payment,
                )
            )
            return int(getattr(ended, "rowcount", 0))

    def _with_payment_status(
        self, session: Session, session_id: str
    ) -> tuple[CheckoutSession, str | None]:
        found = session.execute(
            select(CheckoutSession, Payment.status)
            .outerjoin(Payment, Payment.caller == SESSION_SCOPE_PREFIX + CheckoutSession.id)
            .where(CheckoutSession.id == session_id)
        ).first()
        if found is None:
            raise CheckoutSessionNotFound(session_id)
        return found[0], found[1]

    def _check_open(self, row: CheckoutSession, payment_status: str | None) -> None:
        if payment_status in COMPLETE_STATUSES:
            raise CheckoutSessionGone(
                "checkout_session_completed", "This checkout session is already paid."
            )
        if row.expired_at is not None or row.expires_at <= self._now():
            raise CheckoutSessionGone(
                "checkout_session_expired", "This checkout session has expired."
            )


def _check_matches(ordered: PaymentRequest, body: dict[str, Any]) -> None:
    unknown = sorted(set(body) - ALLOWED_FIELDS)
    if unknown:
        raise ValidationError(unknown[0] or '""', "is not a known field")
    named = {
        "amount": ordered.amount,
        "currency": ordered.currency,
        "captureMethod": ordered.capture_method or DEFAULT_CAPTURE_METHOD,
    }
    for field, value in named.items():
        # Compared as sent: JSON 2300.0 or "2300" is not the session's 2300.
        if field in body and (body[field] != value or type(body[field]) is not type(value)):
            raise CheckoutSessionMismatch(field)
    if "metadata" in body:
        # Checked as any metadata is (numbers become their text), then compared.
        metadata = validate_payment_request({**named, "metadata": body["metadata"]}).metadata
        if metadata != ordered.metadata:
            raise CheckoutSessionMismatch("metadata")
