"""The second handler `make bench` adds (HANDLER_MODULES=bench.perf.handlers): it inserts a row.

With our own ``payments.sync_payment_intent`` that makes two handlers per
``payment_intent.succeeded`` event, as issue 12 measures. ``DONE_TRIGGERS`` is instrumentation
for the latency figure only: deferred constraint triggers that note, at commit, when a run
became ``done`` (clock_timestamp(), the machine's clock), whatever code path marked it.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.ledger.handlers import EventView, registry

HANDLER = "bench.effect"

TABLES = """
CREATE TABLE IF NOT EXISTS bench_effects (
    event_id text NOT NULL, handler text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (event_id, handler)
);
CREATE TABLE IF NOT EXISTS bench_run_done (
    event_id text NOT NULL, handler text NOT NULL, at timestamptz NOT NULL
);
CREATE OR REPLACE FUNCTION bench_note_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_run_done VALUES (NEW.event_id, NEW.handler, clock_timestamp());
    RETURN NULL;
END $$;
"""

# Deferred: they fire while the transaction commits, so `at` is when the run became done for
# everyone else, not when some statement inside a longer (batched) transaction ran.
DONE_TRIGGERS = """
CREATE CONSTRAINT TRIGGER bench_run_done_insert AFTER INSERT ON handler_runs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.status = 'done')
    EXECUTE FUNCTION bench_note_done();
CREATE CONSTRAINT TRIGGER bench_run_done_update AFTER UPDATE ON handler_runs
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.status = 'done' AND OLD.status IS DISTINCT FROM 'done')
    EXECUTE FUNCTION bench_note_done();
"""

DROP_DONE_TRIGGERS = """
DROP TRIGGER IF EXISTS bench_run_done_insert ON handler_runs;
DROP TRIGGER IF EXISTS bench_run_done_update ON handler_runs;
"""


@registry.handles("payment_intent.succeeded", name=HANDLER)
def effect(session: Session, event: EventView) -> None:
    session.execute(
        text(
            "INSERT INTO bench_effects (event_id, handler) VALUES (:e, :h) ON CONFLICT DO NOTHING"
        ),
        {"e": event.id, "h": HANDLER},
    )
