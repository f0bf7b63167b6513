"""What the operators and the running processes leave behind: the admin audit trail, the
worker canaries and the broker each worker consumes from."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    String,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from shared.models.base import Base, now_column


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
    created_at: Mapped[dt.datetime] = now_column()
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
    seen_at: Mapped[dt.datetime] = now_column()
