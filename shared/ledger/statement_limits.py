"""Bounding a ledger transaction by the lease of the work it does: every statement by the lease,
every lock wait by half of what the task has before its soft time limit."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.ledger.retry import soft_time_limit_of_lease

# Lock waits: never 0 (PostgreSQL's "no limit"), at most 30 s.
MIN_LOCK_WAIT_MS = 200
MAX_LOCK_WAIT_MS = 30000


def limit_statements(session: Session, lease: dt.timedelta) -> None:
    """Bound every statement of this transaction by the lease, and every lock wait by half of
    what the task has before its soft time limit (one round trip for both). A wait on a row
    whose holder was cut off from us (its host partitioned away, its transaction open until
    the link returns) then fails as LockNotAvailable, which is transient: the task retries with
    backoff for as long as it takes, instead of being stopped by its time limit. The server
    ends the transaction should it sit idle past the lease too: the session's own bound is the
    service's lease, and a handler with a longer time limit of its own (a queue of its own)
    waits that long between statements as a matter of course."""
    timeout_ms = int(lease.total_seconds() * 1000)
    session.execute(
        text(
            f"SET LOCAL statement_timeout = {timeout_ms}; "
            f"SET LOCAL lock_timeout = {lock_wait_ms(lease)}; "
            f"SET LOCAL idle_in_transaction_session_timeout = {timeout_ms}"
        )
    )


def lock_wait_ms(lease: dt.timedelta) -> int:
    soft = soft_time_limit_of_lease(lease.total_seconds())
    return max(MIN_LOCK_WAIT_MS, min(int(soft * 1000) // 2, MAX_LOCK_WAIT_MS))
