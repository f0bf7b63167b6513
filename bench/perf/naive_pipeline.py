"""The naive Celery pipeline issue 12 compares ours with: one transaction per task, no promises.

An ingest task inserts the event and one run row per handler in one transaction, then sends
one task per handler; a handler task locks its run row, applies the handler and marks the run
done in one transaction. The handlers are ours (the same registry functions, so the same
effects); everything else is Celery's defaults: early acks, prefetch 4, no retries, no leases,
no encryption, no metrics. `make bench` runs it with the Procfile `worker` line's flags:

    celery -A bench.perf.naive_pipeline worker -Q naive_events,naive_handlers --concurrency 2 ...
"""

from __future__ import annotations

import functools
import json
import os

from celery import Celery
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

import bench.perf.handlers  # noqa: F401  (registers bench.effect, as HANDLER_MODULES does)
from shared.ledger.handlers import EventView, registry

INGEST_TASK = "naive.ingest"
RUN_TASK = "naive.run_handler"
INGEST_QUEUE = "naive_events"
HANDLER_QUEUE = "naive_handlers"

TABLES = """
CREATE TABLE IF NOT EXISTS naive_events (
    id text PRIMARY KEY, type text NOT NULL, created timestamptz NOT NULL,
    payload jsonb NOT NULL, received_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS naive_runs (
    event_id text NOT NULL REFERENCES naive_events (id), handler text NOT NULL,
    status text NOT NULL DEFAULT 'pending', updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, handler)
);
"""


def make_app(redis_url: str) -> Celery:
    naive = Celery("naive", broker=redis_url, set_as_current=False)
    naive.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_routes={INGEST_TASK: {"queue": INGEST_QUEUE}, RUN_TASK: {"queue": HANDLER_QUEUE}},
    )
    return naive


app = make_app(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


@functools.cache
def _sessions() -> sessionmaker[Session]:
    # Made on first use in each prefork child, never in the parent.
    return sessionmaker(create_engine(os.environ["DATABASE_URL"]))


@app.task(name=INGEST_TASK)
def ingest(body: str) -> None:
    event = json.loads(body)
    handlers = registry.handlers_for(event["type"])
    with _sessions().begin() as session:
        inserted = session.execute(
            text(
                "INSERT INTO naive_events (id, type, created, payload) "
                "VALUES (:id, :type, to_timestamp(:created), CAST(:payload AS jsonb)) "
                "ON CONFLICT DO NOTHING RETURNING id"
            ),
            {
                "id": event["id"],
                "type": event["type"],
                "created": event["created"],
                "payload": body,
            },
        ).scalar()
        if inserted is None:
            return
        for handler in handlers:
            session.execute(
                text("INSERT INTO naive_runs (event_id, handler) VALUES (:e, :h)"),
                {"e": event["id"], "h": handler},
            )
    for handler in handlers:
        app.send_task(RUN_TASK, args=[event["id"], handler])


@app.task(name=RUN_TASK)
def run_handler(event_id: str, handler: str) -> None:
    with _sessions().begin() as session:
        row = session.execute(
            text(
                "SELECT r.status, e.type, e.created, e.payload FROM naive_runs r "
                "JOIN naive_events e ON e.id = r.event_id "
                "WHERE r.event_id = :e AND r.handler = :h FOR UPDATE OF r"
            ),
            {"e": event_id, "h": handler},
        ).one()
        if row.status == "done":
            return
        view = EventView(id=event_id, type=row.type, created=row.created, payload=row.payload)
        registry.get(handler)(session, view)
        session.execute(
            text(
                "UPDATE naive_runs SET status = 'done', updated_at = now() "
                "WHERE event_id = :e AND handler = :h"
            ),
            {"e": event_id, "h": handler},
        )


def enqueue(producer: Celery, bodies: list[str]) -> None:
    """Queue one ingest task per event body, as a receiver in front of this pipeline would."""
    with producer.producer_or_acquire() as publisher:
        for body in bodies:
            producer.send_task(INGEST_TASK, args=[body], producer=publisher)
