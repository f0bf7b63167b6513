"""`make bench-ledger`: the ledger's operator and maintenance queries at 10 million events.

Creates a database of its own on the machine's PostgreSQL (dropped at the end unless --keep),
migrates it, fills ``stripe_events`` with N events spread over 120 days and ``handler_runs``
with two runs each (one run in 10,000 pending, one in 20,000 dead, the rest done), analyzes,
then times the product's own functions (after one warm-up call each), each in a transaction
rolled back afterwards so every repetition sees the same rows: the sweeper, the dead-letter
list (unfiltered and by type, handler, age), the dead count, the reconciler's "which of these
do we know" lookup, and one batch of retention. Prints one Markdown table (median and slowest
of the repetitions). `make bench-ledger` fills in about 5 minutes here; --keep then --reuse
times a filled database again (after migrating it, so a new index is timed too).

    make bench-ledger                       # 10,000,000 events
    python -m bench.perf.ledger_scale --events 200000
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from bench.perf.report import machine_facts
from shared.db import upgrade
from shared.ledger.recovery.dead_letters import RunFilter, count_dead, list_dead
from shared.ledger.recovery.reconcile import recorded_ids
from shared.ledger.recovery.sweeper import sweep_pending
from shared.ledger.retention import horizon_for, prune_batch

POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432"
GOAL_MS = 50.0

# Constants only, no input: the spread over 120 days and the three event types are spelled out.
FILL = """
SET synchronous_commit = off;
INSERT INTO stripe_events (id, type, created, livemode, payload_encrypted, source, received_at)
SELECT 'evt_' || lpad(g::text, 14, '0'),
       (ARRAY['payment_intent.succeeded', 'payment_intent.created', 'charge.refunded'])
       [1 + g % 3], at, false, 'gAAAA-bench', 'webhook', at
FROM (SELECT g, now() - (:n - g) * (interval '120 days' / :n) AS at
      FROM generate_series(1, :n) AS g) AS s;
INSERT INTO handler_runs (event_id, handler, status, attempts, updated_at, finished_at,
                          last_error)
SELECT 'evt_' || lpad(g::text, 14, '0'), h,
       CASE WHEN g % 10000 = 0 THEN 'pending' WHEN g % 20000 = 7 THEN 'dead' ELSE 'done' END,
       1, at, CASE WHEN g % 10000 = 0 THEN NULL ELSE at END,
       CASE WHEN g % 20000 = 7 THEN 'ValueError: bench' END
FROM (SELECT g, now() - (:n - g) * (interval '120 days' / :n) AS at
      FROM generate_series(1, :n) AS g) AS s,
     unnest(ARRAY['payments.sync_payment_intent', 'bench.effect']) AS h;
"""


@contextmanager
def own_database(events: int, keep: bool, reuse: bool) -> Iterator[Engine]:
    """The database, new and empty; with ``reuse``, one a --keep run filled, migrated to the
    newest schema (so new indexes can be timed without filling it again)."""
    name = f"ledger_scale_{events}"
    admin = create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    if not reuse:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    upgrade(f"{POSTGRES}/{name}")
    engine = create_engine(f"{POSTGRES}/{name}")
    try:
        yield engine
    finally:
        engine.dispose()
        if not keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fill(engine: Engine, events: int) -> float:
    started = time.monotonic()
    with engine.begin() as conn:
        for statement in FILL.split(";"):
            if statement.strip():
                conn.execute(text(statement), {"n": events})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE stripe_events, handler_runs"))
    return time.monotonic() - started


@contextmanager
def rolled_back(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Sessions whose commits are savepoints of one transaction rolled back at the end."""
    connection = engine.connect()
    outer = connection.begin()
    try:
        yield sessionmaker(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
    finally:
        outer.rollback()
        connection.close()


def timed(engine: Engine, call: Callable[[sessionmaker[Session]], Any], times: int) -> list[float]:
    """Milliseconds of each of ``times`` calls, after one untimed call that warms PostgreSQL's
    cache (the steady state of a sweeper that runs every minute)."""
    spent = []
    for _ in range(times + 1):
        with rolled_back(engine) as sessions:
            started = time.perf_counter()
            call(sessions)
            spent.append((time.perf_counter() - started) * 1000)
    return spent[1:]


def _known_ids(events: int) -> Callable[[sessionmaker[Session]], Any]:
    # The reconciler asks which of a page of 100 listed events we have
    # (shared.ledger.recovery.reconcile).
    ids = [f"evt_{g:014d}" for g in range(events - 150, events - 50)]

    def call(sessions: sessionmaker[Session]) -> Any:
        with sessions() as session:
            return recorded_ids(session, ids)

    return call


def _prune_one_batch(sessions: sessionmaker[Session]) -> Any:
    with sessions.begin() as session:
        return prune_batch(session, horizon_for(dt.timedelta(days=90)), 5000)


def measurements(events: int) -> list[tuple[str, Callable[[sessionmaker[Session]], Any], bool]]:
    """(what, call, whether the 50 ms goal applies)."""
    week_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
    return [
        ("sweeper: pending runs untouched for 5 min (up to 1,000)",
         lambda s: sweep_pending(s, 300), True),
        ("dead-letter list, first 100", lambda s: list_dead(s, RunFilter(), 100), True),
        ("dead-letter list by event type",
         lambda s: list_dead(s, RunFilter(event_type="charge.refunded"), 100), True),
        ("dead-letter list by handler",
         lambda s: list_dead(s, RunFilter(handler="bench.effect"), 100), True),
        ("dead-letter list of the last 7 days",
         lambda s: list_dead(s, RunFilter(since=week_ago), 100), True),
        ("dead-letter count (/metrics, /admin)", count_dead, True),
        ("reconciler: which of 100 listed events are recorded", _known_ids(events), True),
        ("retention: one batch of 5,000 events older than 90 days", _prune_one_batch, False),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--times", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the filled database")
    parser.add_argument("--reuse", action="store_true", help="time a database --keep left")
    args = parser.parse_args()
    with own_database(args.events, args.keep or args.reuse, args.reuse) as engine:
        if not args.reuse:
            print(f"filling {args.events:,} events and {2 * args.events:,} runs ...", flush=True)
            print(f"filled and analyzed in {fill(engine, args.events):.0f} s\n")
        print("| query | median | slowest | goal |\n|---|---|---|---|")
        for what, call, goal in measurements(args.events):
            spent = timed(engine, call, args.times)
            verdict = "met" if max(spent) <= GOAL_MS else "MISSED"
            target = f"≤ {GOAL_MS:.0f} ms: {verdict}" if goal else "—"
            print(
                f"| {what} | {statistics.median(spent):.1f} ms | {max(spent):.1f} ms | {target} |"
            )
    print(f"\n{args.events:,} events, {2 * args.events:,} runs. " + ", ".join(machine_facts()))


if __name__ == "__main__":
    main()
