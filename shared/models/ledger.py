"""The ledger of events: each Stripe event received, one row per handler run, the
reconciler's checkpoint, and the queued bodies no key could decrypt."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, RunStatus, now_column

_RUN_STATUS_CHECK = "status IN (" + ", ".join(f"'{status}'" for status in RunStatus) + ")"


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
    received_at: Mapped[dt.datetime] = now_column()

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
    created_at: Mapped[dt.datetime] = now_column()
    updated_at: Mapped[dt.datetime] = now_column()
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
    updated_at: Mapped[dt.datetime] = now_column()


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
    quarantined_at: Mapped[dt.datetime] = now_column()
    recovered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    recovered_event_id: Mapped[str | None] = mapped_column(String(255))
