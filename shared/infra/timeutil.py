"""Time helpers shared by the ledger and the payments: Stripe counts seconds since the epoch."""

from __future__ import annotations

import datetime as dt


def utc_from_timestamp(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
