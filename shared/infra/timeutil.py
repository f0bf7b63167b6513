"""Time helpers shared by the ledger, the payments and the CLI: everything is in UTC."""

from __future__ import annotations

import datetime as dt


def utc_from_timestamp(seconds: float) -> dt.datetime:
    """Stripe's times are seconds since the epoch."""
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """A naive date/time (as typed on the command line) read as UTC."""
    return None if value is None else value.replace(tzinfo=dt.UTC)
