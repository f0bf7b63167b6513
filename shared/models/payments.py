"""Payments and what comes after them (refunds, disputes), and the checkout sessions that
price them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, now_column


class Payment(Base):
    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # Null only while the create request is between our insert and Stripe's answer.
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    # Integer minor units (cents for usd), as Stripe counts them.
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    status: Mapped[str] = mapped_column(String(40), nullable=False)
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, nullable=False, server_default="{}"
    )
    # Who created the payment (see shared.payments.callers): idempotency keys are unique per
    # caller, as Stripe's are per account, so one caller's key never replays another's payment.
    caller: Mapped[str | None] = mapped_column(String(80))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # While set and in the future, a create request for this key is talking to Stripe: a
    # concurrent one gets 409 idempotency_key_in_use; a later one takes over (its holder died).
    create_lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # sha256 of the PaymentIntent's client secret: the proof a status reader must show. The
    # secret itself is never stored.
    client_secret_sha256: Mapped[str | None] = mapped_column(String(64))
    # sha256 of the canonical request body: the same key with another body is a conflict.
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    last_error_code: Mapped[str | None] = mapped_column(String(255))
    last_error_decline_code: Mapped[str | None] = mapped_column(String(255))
    last_error_message: Mapped[str | None] = mapped_column(Text)
    # `created` of the Stripe event (or object) that set the current status: the ordering guard.
    status_as_of: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Stripe's own figures, in minor units, as of status_as_of: what was captured, and what an
    # authorized manual-capture payment may still capture.
    capture_method: Mapped[str | None] = mapped_column(String(32))
    amount_received: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    amount_capturable: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    created_at: Mapped[dt.datetime] = now_column()
    updated_at: Mapped[dt.datetime] = now_column()

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        UniqueConstraint("caller", "idempotency_key", name="uq_payments_caller_idempotency_key"),
    )


class CheckoutSession(Base):
    """An order the merchant's back end priced (``POST /api/checkout-sessions``), which the
    browser holding its token may pay, with one PaymentIntent, until it expires."""

    __tablename__ = "checkout_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The caller that made it ("client:<name>", or "demo" on the dev stand-in's page).
    created_by: Mapped[str] = mapped_column(String(80), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, nullable=False, server_default="{}"
    )
    capture_method: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = now_column()
    # Indexed: retention prunes by it.
    expires_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, index=True
    )
    # Set when it ended before expires_at (its creator expired it, or card testing), with why.
    expired_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    expired_reason: Mapped[str | None] = mapped_column(String(32))
    # Declines and failed authentications of its PaymentIntent (payment_intent.payment_failed,
    # each event counted once), and how many end it: card testing runs through confirmations,
    # which go from the browser straight to Stripe.
    failed_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    max_failed_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="5")
    # Ended for its failures, and its PaymentIntent not canceled at Stripe yet: the sweeper's
    # to do (an outbox, so the cancel survives any crash between the two).
    cancel_pending: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_checkout_sessions_cancel_pending", "id", postgresql_where=text("cancel_pending")),
        # The sweeper's look for sessions whose time is up and not yet ended.
        Index(
            "ix_checkout_sessions_open_expiry",
            "expires_at",
            postgresql_where=text("expired_at IS NULL"),
        ),
    )


class _AfterPayment:
    """What a refund and a dispute share: Stripe's object, keyed by its id, tied to its
    PaymentIntent by id only (its events may come before the payment's own)."""

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    # Indexed: a Charge's events (charge.refunded) name both ids and join what came without its
    # PaymentIntent to it.
    charge_id: Mapped[str | None] = mapped_column(String(255), index=True)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(64))
    # Stripe's `created` of the object, and of the event that set its status (the guard).
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    status_as_of: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[dt.datetime] = now_column()
    updated_at: Mapped[dt.datetime] = now_column()


class Refund(_AfterPayment, Base):
    __tablename__ = "refunds"

    failure_reason: Mapped[str | None] = mapped_column(String(64))


class Dispute(_AfterPayment, Base):
    __tablename__ = "disputes"

    evidence_due_by: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Whether the disputed charge may still be refunded (Stripe's word, with the status).
    is_charge_refundable: Mapped[bool | None] = mapped_column(Boolean)
    # Set by charge.dispute.funds_withdrawn / funds_reinstated, or by a dispute whose
    # balance_transactions show the withdrawal or the reinstatement; never unset.
    funds_withdrawn: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    funds_reinstated: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
