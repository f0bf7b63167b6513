"""The outbox: the side effects handlers asked for, each committed with its handler's run (or
not at all) and delivered afterwards by the relay (shared.effects.relay)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, RunStatus, now_column

# An effect is never held: the run that asked for it was applied.
EFFECT_STATUSES = (RunStatus.PENDING, RunStatus.DONE, RunStatus.DEAD)
_STATUS_CHECK = "status IN (" + ", ".join(f"'{status}'" for status in EFFECT_STATUSES) + ")"


class OutboxEffect(Base):
    __tablename__ = "outbox_effects"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # No foreign key: retention may prune the event long after its effects were delivered.
    event_id: Mapped[str] = mapped_column(String(255), nullable=False)
    handler: Mapped[str] = mapped_column(String(255), nullable=False)
    # The handler's name for it: one effect per (event, handler, name), however often it runs.
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    # What the effect's code is given, as a Fernet token: it may hold an address, or a URL that
    # is itself a credential.
    payload_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    # Sent with every delivery of this effect, the same each time (an HTTP effect's
    # Idempotency-Key, an email's Message-ID): the receiver drops a repeat.
    idempotency_key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=RunStatus.PENDING.value
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    # When a relay may take it: now for a new one, after the backoff for a retry, after the
    # lease for one a relay is delivering (a relay that dies mid-send leaves it to come back).
    next_attempt_at: Mapped[dt.datetime] = now_column()
    replays: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    created_at: Mapped[dt.datetime] = now_column()
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(_STATUS_CHECK, name="status_known"),
        UniqueConstraint(
            "event_id", "handler", "name", name="uq_outbox_effects_event_handler_name"
        ),
        # The relay takes the pending ones that are due, oldest first.
        Index(
            "ix_outbox_effects_due",
            "next_attempt_at",
            postgresql_where="status = 'pending'",
        ),
        Index("ix_outbox_effects_status_created_at", "status", "created_at"),
    )
