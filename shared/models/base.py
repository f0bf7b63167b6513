"""What every table shares: the declarative base with its constraint names and the
timestamp column; and the handler-run statuses that the ledger's check constraint and every
query use."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import (
    DateTime,
    MetaData,
    func,
)
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
    # Not applied: the event's API version is not one its handler accepts. An operator
    # releases it (shared.ledger.recovery.held) once the handler can take it.
    HELD = "held"


EVENT_SOURCES = ("webhook", "reconcile", "replay")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def now_column() -> Mapped[dt.datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
