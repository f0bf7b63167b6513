"""The ledger: payments, the Stripe events we received, and one row per handler run."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so Alembic migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class RunStatus(StrEnum):
    """Where a handler run stands. The check constraint, the models and every query use these."""

    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"


_RUN_STATUS_CHECK = "status IN (" + ", ".join(f"'{status}'" for status in RunStatus) + ")"
EVENT_SOURCES = ("webhook", "reconcile", "replay")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now_column() -> Mapped[dt.datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


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
    created_at: Mapped[dt.datetime] = _now_column()
    updated_at: Mapped[dt.datetime] = _now_column()

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
    created_at: Mapped[dt.datetime] = _now_column()
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
    created_at: Mapped[dt.datetime] = _now_column()
    updated_at: Mapped[dt.datetime] = _now_column()


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


class StripeEvent(Base):
    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(255), nullable=False)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    livemode: Mapped[bool] = mapped_column(Boolean, nullable=False)
    account: Mapped[str | None] = mapped_column(String(255))
    api_version: Mapped[str | None] = mapped_column(String(64))
    # Plaintext JSON only for rows written before encryption at rest; `payments keys rotate`
    # moves them into payload_encrypted.
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The event as a Fernet token (see shared.infra.crypto).
    payload_encrypted: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    received_at: Mapped[dt.datetime] = _now_column()

    __table_args__ = (
        CheckConstraint("source IN ('webhook', 'reconcile', 'replay')", name="source_known"),
        CheckConstraint(
            "payload IS NOT NULL OR payload_encrypted IS NOT NULL", name="payload_present"
        ),
        Index("ix_stripe_events_created", "created"),
        Index("ix_stripe_events_type_created", "type", "created"),
        # Retention prunes the oldest received first (shared.ledger.retention).
        Index("ix_stripe_events_received_at", "received_at"),
    )


class HandlerRun(Base):
    __tablename__ = "handler_runs"

    event_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("stripe_events.id", ondelete="CASCADE"), primary_key=True
    )
    handler: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=RunStatus.PENDING.value
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    # While set and in the future, a worker holds this run: a second delivery of the task
    # leaves it alone. A worker that dies mid-run leaves it to expire.
    leased_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # When the next retry is due; the sweeper leaves a run alone until then.
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # How many times an operator sent this run back from the dead-letter list (or forced it).
    replays: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    created_at: Mapped[dt.datetime] = _now_column()
    updated_at: Mapped[dt.datetime] = _now_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(_RUN_STATUS_CHECK, name="status_known"),
        # The sweeper and the dead-letter list both scan by status and age.
        Index("ix_handler_runs_status_updated_at", "status", "updated_at"),
    )


class ReconcileCheckpoint(Base):
    """Where the reconciler got to in Stripe's event list, one row per Stripe account."""

    __tablename__ = "reconcile_checkpoints"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_event_created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[dt.datetime] = _now_column()


class AdminAction(Base):
    """What an operator did under /admin/ (or the CLI): written before the action starts and
    completed with its outcome, so a crash in between still leaves a row ("pending") that says
    the action may have happened. Names the operator, never the token."""

    __tablename__ = "admin_actions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # Indexed: the audit is read newest first.
    started_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), index=True
    )
    operator: Mapped[str] = mapped_column(String(64), nullable=False)
    scope: Mapped[str] = mapped_column(String(16), nullable=False)
    # "refund", "capture", "cancel", "dlq.replay", "event.replay", ...
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    # The PaymentIntent, the event or the dead-letter selection acted on.
    target: Mapped[str] = mapped_column(String(255), nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # "pending" until it ends; then "ok" or the error's code.
    outcome: Mapped[str] = mapped_column(String(64), nullable=False, server_default="pending")
    # The HTTP status answered (None for the CLI), and Stripe's request id when Stripe was asked.
    status: Mapped[int | None] = mapped_column(Integer)
    stripe_request_id: Mapped[str | None] = mapped_column(String(255))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class WorkerCanary(Base):
    """A canary task's trace: `payments worker-check` sends one per queue and waits for it."""

    __tablename__ = "worker_canaries"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    queue: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[dt.datetime] = _now_column()
    seen_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class WorkerBroker(Base):
    """The broker each live worker consumes from, noted by the worker itself every half minute.

    Every process takes its broker from its own environment: a worker started with another
    BROKER_URL than the web process would consume nothing the web publishes. This table is how
    `payments worker-check` and `/readyz` see that (shared.observability.worker_brokers).
    """

    __tablename__ = "worker_brokers"

    hostname: Mapped[str] = mapped_column(String(255), primary_key=True)
    # scheme://host:port/db of the broker, never its credentials.
    broker: Mapped[str] = mapped_column(String(512), nullable=False)
    seen_at: Mapped[dt.datetime] = _now_column()


class QuarantinedEvent(Base):
    """A queued body no configured key decrypted within UNDECRYPTABLE_RETRY_SECONDS.

    Kept as it was queued (ciphertext, never plaintext) so an operator who still has the key
    that encrypted it can recover it with `payments events quarantine retry`; a forgery stays
    here unread.
    """

    __tablename__ = "quarantined_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    # A message redelivered after its worker died quarantines once.
    body_sha256: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    first_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    quarantined_at: Mapped[dt.datetime] = _now_column()
    recovered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    recovered_event_id: Mapped[str | None] = mapped_column(String(255))
