"""Celery tasks: thin wrappers that call ``shared`` and decide retry or dead-letter."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

from celery import Task
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings, load_settings
from shared.crypto import PayloadCipher
from shared.db import make_engine, make_session_factory
from shared.dlq import sweep_pending
from shared.errors import is_transient
from shared.events import UndecryptableBody, ingest, quarantine, undecryptable_countdown
from shared.handlers import load_handler_modules
from shared.health import record_canary
from shared.logging import bind
from shared.metrics import (
    EVENTS_REFUSED,
    HANDLER_RUNS,
    INGEST_QUARANTINED,
    INGEST_UNDECRYPTABLE,
    SWEPT,
)
from shared.observability import report_dead_letter, report_ingest_failure
from shared.queue import (
    CANARY_TASK,
    INGEST_EVENT_TASK,
    RECONCILE_TASK,
    RUN_HANDLER_TASK,
    SWEEP_TASK,
    enqueue_run,
    retry_countdown_cap,
)
from shared.reconcile import StripeEventSource, reconcile
from shared.runs import RetryPolicy, RunOutcome, execute_run, record_failure
from shared.stripe_gateway import StripeGateway, make_stripe_client
from shared.webhooks import EventRefused, EventScope, WebhookRejected
from workers.celery_app import app

log = logging.getLogger(__name__)

# Ingest is cheap and its message is the only copy of the event until it commits: retry it
# quickly and for ever.
INGEST_RETRY_CAP_SECONDS = 30.0


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    sessions: sessionmaker[Session]
    policy: RetryPolicy
    stripe: StripeGateway
    cipher: PayloadCipher


@functools.cache
def runtime() -> Runtime:
    # Built on first use inside each prefork child, never at import in the parent: a database
    # connection must not be shared across fork.
    settings = load_settings()
    load_handler_modules(settings.handler_modules)
    policy = RetryPolicy(
        max_transient_attempts=settings.handler_max_attempts,
        max_permanent_attempts=settings.handler_max_permanent_attempts,
        base_seconds=settings.retry_base_seconds,
        cap_seconds=retry_countdown_cap(settings),
        # Longer than the hard time limit, so a live attempt is never taken over.
        lease_seconds=settings.handler_time_limit_seconds + 5,
    )
    sessions = make_session_factory(make_engine(settings.database_url))
    return Runtime(
        settings,
        sessions,
        policy,
        StripeGateway.from_settings(settings),
        PayloadCipher(settings.encryption_keys),
    )


def _enqueue(event_id: str, handler: str) -> None:
    enqueue_run(app, event_id, handler)


@app.task(name=INGEST_EVENT_TASK, bind=True, max_retries=None)
def ingest_event(
    self: Task, body: str, source: str = "webhook", first_attempt_at: float | None = None
) -> None:
    rt = runtime()
    try:
        result = ingest(rt.sessions, body, source, rt.cipher, EventScope.of(rt.settings))
    except UndecryptableBody:
        _retry_or_quarantine(self, body, source, first_attempt_at or time.time())
        return
    except EventRefused as exc:
        # Never applied, and retrying cannot change that: count it, say so, drop it.
        EVENTS_REFUSED.labels(reason=exc.code, stage="ingest").inc()
        log.error("refused queued event %s: %s", exc.event_id, exc.code)
        return
    except WebhookRejected:
        # The receiver verified this body already; if it still does not parse, retrying
        # cannot help. Say so loudly and drop it.
        log.exception("dropping an event body that does not parse")
        return
    except Exception as exc:
        attempt = self.request.retries + 1
        if not is_transient(exc) and attempt >= rt.policy.max_permanent_attempts:
            # Retrying cannot fix it. The event stays listed at Stripe, where the reconciler
            # will try it again; Sentry and the error log tell a person to look.
            log.critical("giving up on ingesting an event after %d attempts", attempt, exc_info=exc)
            report_ingest_failure(exc)
            return
        # Nothing is recorded yet, so the event exists only in this message: keep retrying.
        countdown = min(rt.policy.countdown(attempt), INGEST_RETRY_CAP_SECONDS)
        log.warning("ingest failed, retrying in %.1fs: %s", countdown, exc)
        raise self.retry(exc=exc, countdown=countdown) from exc
    bind(event_id=result.event_id)
    log.info(
        "event %s (%s) %s; %d handler run(s) pending",
        result.event_id,
        result.event_type,
        "recorded" if result.newly_recorded else "already recorded",
        len(result.pending_handlers),
    )
    for handler in result.pending_handlers:
        _enqueue(result.event_id, handler)


def _retry_or_quarantine(task: Task, body: str, source: str, first_attempt_at: float) -> None:
    """A body no key decrypts is most likely under a key the web process got before us: retry
    it (the first attempt's time rides along) until the bound, then quarantine it."""
    rt = runtime()
    INGEST_UNDECRYPTABLE.inc()
    attempts = task.request.retries + 1
    backoff = min(rt.policy.countdown(attempts), INGEST_RETRY_CAP_SECONDS)
    countdown = undecryptable_countdown(
        first_attempt_at, time.time(), rt.settings.undecryptable_retry_seconds, backoff
    )
    if countdown is not None:
        log.warning(
            "queued body decrypts under no configured key (attempt %d), retrying in %.1fs: "
            "is a new PAYMENTS_ENCRYPTION_KEYS key on web and not yet on the workers?",
            attempts,
            countdown,
        )
        raise task.retry(kwargs={"first_attempt_at": first_attempt_at}, countdown=countdown)
    if quarantine(rt.sessions, body, source, attempts=attempts, first_attempt_at=first_attempt_at):
        INGEST_QUARANTINED.inc()
    log.critical(
        "quarantined a queued body no configured key decrypted in %d attempts over %ds; "
        "recover it with `payments events quarantine retry` once its key is configured",
        attempts,
        rt.settings.undecryptable_retry_seconds,
    )


@app.task(name=RUN_HANDLER_TASK, bind=True, max_retries=None)
def run_handler(self: Task, event_id: str, handler: str) -> None:
    bind(event_id=event_id)
    rt = runtime()
    try:
        outcome = execute_run(
            rt.sessions, event_id, handler, rt.cipher, rt.stripe, policy=rt.policy
        )
    except Exception as exc:
        try:
            failure = record_failure(rt.sessions, event_id, handler, exc, rt.policy)
        except SQLAlchemyError:
            # The database is unreachable, so the run is still pending there: retry. Should
            # this message be lost too, the sweeper finds the pending row later.
            log.warning("could not record the failure of %s/%s", event_id, handler)
            countdown = rt.policy.countdown(self.request.retries + 1)
            raise self.retry(exc=exc, countdown=countdown) from exc
        HANDLER_RUNS.labels(handler=handler, status="dead" if failure.dead else "retry").inc()
        if failure.dead:
            log.error(
                "run %s/%s is dead after %d attempts: %s",
                event_id,
                handler,
                failure.attempts,
                type(exc).__name__,
            )
            report_dead_letter(
                exc, event_id=event_id, handler=handler, event_type=failure.event_type
            )
            return
        if failure.attempts == 0:
            return  # finished elsewhere meanwhile
        log.warning(
            "run %s/%s failed (attempt %d, %s), retrying in %.1fs",
            event_id,
            handler,
            failure.attempts,
            "transient" if failure.transient else "permanent",
            failure.countdown,
        )
        raise self.retry(exc=exc, countdown=failure.countdown) from exc
    if outcome is RunOutcome.LEASED:
        # Another delivery holds the run, or one whose worker died does until its lease ends:
        # look again then. A finished run will be left alone; an abandoned one is claimed.
        countdown = rt.policy.lease_seconds + 1
        log.info("run %s/%s is leased; looking again in %.0fs", event_id, handler, countdown)
        raise self.retry(countdown=countdown)
    if outcome is RunOutcome.DEAD:
        HANDLER_RUNS.labels(handler=handler, status="dead").inc()
        log.error("run %s/%s is dead: its worker died on every attempt", event_id, handler)
        report_dead_letter(
            RuntimeError("worker died or timed out on every attempt"),
            event_id=event_id,
            handler=handler,
            event_type=None,
        )
    elif outcome is RunOutcome.MISSING:
        log.error("run %s/%s does not exist; nothing to do", event_id, handler)
    else:
        log.info("run %s/%s: %s", event_id, handler, outcome.value)


@app.task(name=CANARY_TASK, ignore_result=True)
def canary(token: str) -> None:
    record_canary(runtime().sessions, token)


@app.task(name=SWEEP_TASK, ignore_result=True)
def sweep_pending_runs() -> int:
    rt = runtime()
    runs = sweep_pending(rt.sessions, rt.settings.sweep_pending_seconds)
    for event_id, handler in runs:
        _enqueue(event_id, handler)
    if runs:
        SWEPT.inc(len(runs))
        log.warning("sweeper re-sent %d pending run(s)", len(runs))
    return len(runs)


@app.task(name=RECONCILE_TASK, ignore_result=True)
def reconcile_events() -> int:
    rt = runtime()
    result = reconcile(
        rt.sessions,
        StripeEventSource(make_stripe_client(rt.settings)),
        overlap_seconds=rt.settings.reconcile_overlap_seconds,
        lookback_seconds=rt.settings.reconcile_lookback_seconds,
        cipher=rt.cipher,
        scope=EventScope.of(rt.settings),
    )
    for event_id, handler in result.pending_runs:
        _enqueue(event_id, handler)
    return result.recovered
