"""What the fast ledger tests share: events, run rows, and a session
factory that lets another worker act between two of the code's transactions."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.ledger.event_rules import EventScope, expected_object
from shared.ledger.retry import RetryPolicy
from shared.models import HandlerRun

SCOPE = EventScope(livemode=False, connected_accounts=("acct_served",))
# Every jitter at its highest: the countdowns are exact.
POLICY = RetryPolicy(
    max_transient_attempts=3,
    max_permanent_attempts=2,
    base_seconds=1,
    cap_seconds=10,
    time_limit_seconds=20,
    jitter=lambda low, high: high,
)
CREATED = 1_700_000_000
_ids = itertools.count(1)


def make_event(event_type: str, *, created: int = CREATED, **obj: Any) -> dict[str, Any]:
    # Stripe-shaped: the object says what it is, as every Stripe object does.
    kind = expected_object(event_type)
    if kind is not None:
        obj = {"object": kind, **obj}
    return {
        "id": f"evt_kit_{next(_ids)}",
        "object": "event",
        "type": event_type,
        "created": created,
        "livemode": False,
        "data": {"object": {"id": f"obj_{next(_ids)}", **obj}},
    }


class Between:
    """A session factory that runs ``hook`` just before its ``nth`` session is opened (1 is the
    first): what another worker or operator does between two transactions of the code."""

    def __init__(self, sessions: sessionmaker[Session], nth: int, hook: Callable[[], None]) -> None:
        self._sessions = sessions
        self._nth = nth
        self._hook = hook
        self.opened = 0

    def __call__(self) -> Session:
        self.opened += 1
        if self.opened == self._nth:
            self._hook()
        return self._sessions()

    @property
    def sessions(self) -> sessionmaker[Session]:
        """This, typed as what the ledger's functions take (they only call it)."""
        return cast(sessionmaker[Session], self)


def run_rows(db: sessionmaker[Session], event_id: str) -> dict[str, HandlerRun]:
    with db() as session:
        rows = session.execute(select(HandlerRun).where(HandlerRun.event_id == event_id))
        return {run.handler: run for run in rows.scalars()}


def set_run(db: sessionmaker[Session], event_id: str, handler: str | None, **values: Any) -> None:
    """Write ``values`` on one run (or every run of the event), committed."""
    query = update(HandlerRun).where(HandlerRun.event_id == event_id)
    if handler is not None:
        query = query.where(HandlerRun.handler == handler)
    with db.begin() as session:
        session.execute(query.values(**values))


def ago(**delta: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(**delta)
