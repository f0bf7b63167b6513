"""Celery tasks: thin wrappers that call ``shared`` and decide retry or dead-letter."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from celery import Task
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings, load_settings
from shared.db import make_engine, make_session_factory
from shared.events import ingest
from shared.queue import INGEST_EVENT_TASK, RUN_HANDLER_TASK, retry_countdown_cap
from shared.runs import RunOutcome, backoff_seconds, execute_run, record_failure
from shared.webhooks import WebhookRejected
from workers.celery_app import app

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    sessions: sessionmaker[Session]


@functools.cache
def runtime() -> Runtime:
    # Built on first use inside each prefork child, never at import in the parent: a database
    # connection must not be shared across fork.
    settings = load_settings()
    return Runtime(settings, make_session_factory(make_engine(settings.database_url)))


@app.task(name=INGEST_EVENT_TASK, bind=True, max_retries=None, acks_late=True)
def ingest_event(self: Task, body: str, source: str = "webhook") -> None:
    rt = runtime()
    try:
        result = ingest(rt.sessions, body, source)
    except WebhookRejected:
        # The receiver verified this body already; if it still does not parse, retrying
        # cannot help. Say so loudly and drop it.
        log.exception("dropping an event body that does not parse")
        return
    except Exception as exc:
        # Nothing is recorded yet, so the event exists only in this message: keep retrying.
        countdown = backoff_seconds(self.request.retries, cap=retry_countdown_cap(rt.settings))
        log.warning("ingest failed, retrying in %.1fs: %s", countdown, exc)
        raise self.retry(exc=exc, countdown=countdown) from exc
    log.info(
        "event %s (%s) %s; %d handler run(s) pending",
        result.event_id,
        result.event_type,
        "recorded" if result.newly_recorded else "already recorded",
        len(result.pending_handlers),
    )
    for handler in result.pending_handlers:
        run_handler.apply_async(args=[result.event_id, handler])


@app.task(name=RUN_HANDLER_TASK, bind=True, max_retries=None, acks_late=True)
def run_handler(self: Task, event_id: str, handler: str) -> None:
    rt = runtime()
    try:
        outcome = execute_run(rt.sessions, event_id, handler)
    except Exception as exc:
        try:
            attempts, dead = record_failure(
                rt.sessions, event_id, handler, exc, max_attempts=rt.settings.handler_max_attempts
            )
        except SQLAlchemyError:
            # The database is unreachable: the run is still pending there, so retry.
            log.warning("could not record the failure of %s/%s", event_id, handler)
            attempts, dead = self.request.retries + 1, False
        if dead:
            log.error("run %s/%s is dead after %d attempts", event_id, handler, attempts)
            return
        countdown = backoff_seconds(attempts, cap=retry_countdown_cap(rt.settings))
        log.warning(
            "run %s/%s failed (attempt %d), retrying in %.1fs",
            event_id,
            handler,
            attempts,
            countdown,
        )
        raise self.retry(exc=exc, countdown=countdown) from exc
    if outcome is RunOutcome.MISSING:
        log.error("run %s/%s does not exist; nothing to do", event_id, handler)
    else:
        log.info("run %s/%s: %s", event_id, handler, outcome.value)
