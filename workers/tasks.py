"""Celery tasks: thin wrappers that call ``shared`` and decide retry or dead-letter."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from typing import Any

from celery import Task

from shared.config import load_settings
from shared.effects.kinds import EffectSettings, kinds_with_builtins
from shared.effects.relay import RELAY_PASS_SECONDS, relay_due
from shared.infra.broker import EVENTS_QUEUE, HANDLERS_QUEUE
from shared.infra.task_batches import BatchItem, batching_strategy, redelivered
from shared.infra.topology import broker_countdown
from shared.ledger.event_rows import IngestResult
from shared.ledger.event_rules import EventRefused, WebhookRejected
from shared.ledger.ingest.delivery import ingest_delivery
from shared.ledger.ingest.first_delivery import ingest_batch
from shared.ledger.ingest.queue_bodies import (
    UndecryptableBody,
    expand_thin_deliveries,
    queued_deliveries,
)
from shared.ledger.recovery.quarantine import quarantine, undecryptable_countdown
from shared.ledger.recovery.reconcile import reconcile_with_stripe
from shared.ledger.recovery.sweeper import sweep_pending
from shared.ledger.retention import prune
from shared.ledger.retry import INGEST_MAX_COUNTDOWN_SECONDS, GiveUp, Retry
from shared.ledger.runs.enqueue import enqueue_handler_run, retry_options
from shared.ledger.runs.task import run_handler_once
from shared.ledger.thin_events import expand_queued
from shared.observability.health import record_canary
from shared.observability.logs import bind, clear_context
from shared.observability.metrics import (
    EVENTS_REFUSED,
    INGEST_QUARANTINED,
    INGEST_UNDECRYPTABLE,
    SWEPT,
)
from shared.observability.sentry import report_ingest_failure
from shared.payments.card_testing import cancel_pending_payments
from shared.payments.checkout_sessions import CheckoutSessions
from shared.payments.operations import PaymentOperations
from shared.runtime import Runtime, build_runtime
from shared.task_names import (
    CANARY_TASK,
    INGEST_EVENT_TASK,
    PRUNE_TASK,
    RECONCILE_TASK,
    RELAY_EFFECTS_TASK,
    RUN_HANDLER_TASK,
    SWEEP_TASK,
)
from workers.celery_app import app

log = logging.getLogger(__name__)


@functools.cache
def runtime() -> Runtime:
    # Built on first use inside each prefork child, never at import in the parent.
    return build_runtime(load_settings())


def _enqueue(event_id: str, handler: str, countdown: float | None = None) -> None:
    enqueue_handler_run(app, runtime().registry, event_id, handler, countdown)


def ingest_in_batches(task: Task, app: Any, consumer: Any, **kwargs: Any) -> Any:
    """ingest_event's Strategy: first deliveries go to the pool together (ingest_batch_of)."""
    size = load_settings().ingest_batch_size
    return batching_strategy(ingest_batch_of, size)(task, app, consumer, **kwargs)


@app.task(
    name=INGEST_EVENT_TASK, bind=True, max_retries=None, Strategy="workers.tasks:ingest_in_batches"
)
def ingest_event(
    self: Task, body: str, source: str = "webhook", first_attempt_at: float | None = None
) -> None:
    rt = runtime()
    try:
        result, retries = _ingest(self, rt, body, source)
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
    except Exception as exc:  # noqa: BLE001 - any other failure: the retry policy decides
        _retry_ingest(self, rt, exc)
        return
    _start_runs(result, retries)


def ingest_batch_of(items: list[BatchItem]) -> list[str]:
    """Ingest a batch of ingest_event's first deliveries (in a pool process); returns the
    task ids to run as ordinary tasks (shared.ledger.ingest.first_delivery says which and why)."""
    clear_context()
    deliveries, alone = queued_deliveries(items)
    try:
        rt = runtime()
        fetch, version = rt.gateway.fetch_related, rt.settings.stripe_api_version
        deliveries, failed = expand_thin_deliveries(deliveries, rt.cipher, fetch, version)
        alone += failed
        # Half the soft time limit: what is left then runs alone, each under its own limits.
        deadline = time.monotonic() + rt.policy.soft_time_limit_seconds / 2
        batch = ingest_batch(
            rt.sessions,
            deliveries,
            rt.cipher,
            rt.scope,
            rt.gateway,
            rt.policy,
            deadline,
            registry=rt.registry,
        )
    except Exception:
        log.exception("could not ingest a batch of %d; running each as a task", len(items))
        return [key for key, _, _ in items]
    for key, settled in batch.settled.items():
        bind(task_id=key)
        try:
            _start_runs(settled.result, settled.retries)
        except Exception:
            log.exception("could not enqueue the runs of %s", settled.result.event_id)
        # The line Celery writes for a task that ran alone: every task received has an end.
        log.info("Task %s[%s] succeeded in a batch of %d", INGEST_EVENT_TASK, key, len(items))
        clear_context()
    return alone + batch.alone


def _start_runs(result: IngestResult, retries: dict[str, Retry]) -> None:
    """After the commit: say what was recorded, send the runs left pending and the retries."""
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
    for handler, retry in retries.items():
        _enqueue(result.event_id, handler, retry.countdown)


def _ingest(
    task: Task, rt: Runtime, body: str, source: str
) -> tuple[IngestResult, dict[str, Retry]]:
    # A thin event's object is fetched here, in the worker: never in the webhook's request.
    body = expand_queued(body, rt.cipher, rt.gateway.fetch_related, rt.settings.stripe_api_version)
    return ingest_delivery(
        rt.sessions,
        body,
        source,
        redelivered=redelivered(task.request),
        cipher=rt.cipher,
        scope=rt.scope,
        stripe=rt.gateway,
        policy=rt.policy,
        registry=rt.registry,
    )


def _retry_ingest(task: Task, rt: Runtime, exc: Exception) -> None:
    attempt = task.request.retries + 1
    decision = rt.policy.after_ingest_failure(attempt, exc)
    if isinstance(decision, GiveUp):
        # The event stays listed at Stripe, where the reconciler will try it again;
        # Sentry and the error log tell a person to look.
        log.critical("giving up on ingesting an event after %d attempts", attempt, exc_info=exc)
        report_ingest_failure(exc)
        return
    log.warning("ingest failed, retrying in %.1fs: %s", decision.countdown, exc)
    raise task.retry(exc=exc, countdown=_countdown(decision.countdown), queue=EVENTS_QUEUE) from exc


def _retry_or_quarantine(task: Task, body: str, source: str, first_attempt_at: float) -> None:
    """A body no key decrypts is most likely under a key the web process got before us: retry
    it (the first attempt's time rides along) until the bound, then quarantine it."""
    rt = runtime()
    INGEST_UNDECRYPTABLE.inc()
    attempts = task.request.retries + 1
    backoff = min(rt.policy.countdown(attempts), INGEST_MAX_COUNTDOWN_SECONDS)
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
        raise task.retry(
            kwargs={"first_attempt_at": first_attempt_at},
            countdown=_countdown(countdown),
            queue=EVENTS_QUEUE,
        )
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
    policy = rt.registry.retry_policy(handler, rt.policy)
    retry = run_handler_once(
        rt.sessions, event_id, handler, rt.cipher, rt.gateway, policy, registry=rt.registry
    )
    if retry is not None:
        # By queue name, not by how this message came: on RabbitMQ a delayed retry arrives
        # through the delay exchanges, and resending it that way would lose its route.
        options = retry_options(rt.registry, handler, policy, default_queue=HANDLERS_QUEUE)
        raise self.retry(countdown=_countdown(retry.countdown), **options)


def _countdown(seconds: float) -> float | None:
    return broker_countdown(app.conf.broker_url, seconds)


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
    # Checkout sessions whose time is up, then the cancels ended sessions owe Stripe.
    CheckoutSessions(rt.sessions, rt.settings.encryption_keys).end_expired()
    cancel_pending_payments(rt.sessions, PaymentOperations(rt.sessions, rt.gateway))
    return len(runs)


@app.task(name=PRUNE_TASK, ignore_result=True)
def prune_old_events() -> int:
    rt = runtime()
    result = prune(
        rt.sessions,
        dt.timedelta(days=rt.settings.event_retention_days),
        rt.settings.reconcile_lookback_seconds,
    )
    if result.events or result.canaries or result.abandoned_claims or result.checkout_sessions:
        log.info(
            "pruned %d event(s) received before %s, %d canary row(s), %d abandoned claim(s) "
            "and %d checkout session(s)",
            result.events,
            result.horizon.isoformat(),
            result.canaries,
            result.abandoned_claims,
            result.checkout_sessions,
        )
    return result.events


@app.task(name=RECONCILE_TASK, ignore_result=True)
def reconcile_events() -> int:
    rt = runtime()
    result = reconcile_with_stripe(rt)
    for event_id, handler in result.pending_runs:
        _enqueue(event_id, handler)
    return result.recovered


@app.task(
    name=RELAY_EFFECTS_TASK,
    ignore_result=True,
    soft_time_limit=RELAY_PASS_SECONDS * 3,
    time_limit=RELAY_PASS_SECONDS * 3 + 10,
)
def relay_effects() -> int:
    rt = runtime()
    effects = EffectSettings.of(rt.settings)
    kinds = kinds_with_builtins(effects)
    deadline = time.monotonic() + RELAY_PASS_SECONDS
    lease = effects.lease_seconds
    outcome = relay_due(
        rt.sessions, kinds, rt.cipher, rt.policy, deadline=deadline, lease_seconds=lease
    )
    return outcome.delivered
