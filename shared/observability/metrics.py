"""Prometheus metrics, defined once and shared by every process.

Web (gunicorn) and worker (Celery prefork) processes run in prometheus-client's multiprocess
mode when PROMETHEUS_MULTIPROC_DIR is set (one directory per process group, emptied at start):
each process writes its samples to files there and the exporter adds them up at scrape time.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from shared.config import prometheus_multiproc_dir

# Every process creates what it needs: under a Procfile runner nothing made this directory, and
# prometheus-client's first sample would fail to open its file there.
if _metrics_dir := prometheus_multiproc_dir():
    Path(_metrics_dir).mkdir(parents=True, exist_ok=True)

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
PROCESSING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)

PAYMENT_ATTEMPTS = Counter(
    "payment_attempts_total", "PaymentIntents created through POST /api/create-payment."
)
PAYMENT_SUCCESS = Counter("payment_success_total", "Payments whose status became succeeded.")
PAYMENT_FAILURES = Counter(
    "payment_failures_total",
    "Failed payment attempts (payment_failed applied), by decline or error code.",
    ["code"],
)
REFUNDS = Counter(
    "refunds_total", "Refunds whose status changed, by the status they reached.", ["status"]
)
DISPUTES = Counter(
    "disputes_total",
    "Disputes whose status changed, by the status they reached (needs_response: a new one "
    "with an evidence deadline).",
    ["status"],
)
TASKS_REFUSED = Counter(
    "tasks_refused_total",
    "Task bodies from the broker without a valid signature, acknowledged and not run.",
    ["task"],
)
CHECKOUT_CARD_TESTING = Counter(
    "checkout_sessions_card_testing_total",
    "Checkout sessions ended for too many failed attempts, their PaymentIntent canceled.",
)
WEBHOOK_LATENCY = Histogram(
    "webhook_latency_seconds",
    "POST /webhook from request in to response out.",
    buckets=LATENCY_BUCKETS,
)
EVENT_PROCESSING = Histogram(
    "event_processing_seconds",
    "From an event's receipt to one of its handlers finishing it.",
    buckets=PROCESSING_BUCKETS,
)
WEBHOOK_EVENTS = Counter(
    "webhook_events_total",
    "Deliveries to POST /webhook by event type and result (queued, rejected, broker_error).",
    ["type", "result"],
)
HANDLER_RUNS = Counter(
    "handler_runs_total",
    "Handler run attempts by outcome (done, retry, dead).",
    ["handler", "status"],
)
EFFECTS_DELIVERED = Counter(
    "effects_deliveries_total",
    "Deliveries of handlers' side effects by kind and outcome (done, retry, dead).",
    ["kind", "result"],
)
DEAD_LETTERED = Counter(
    "handler_runs_dead_lettered_total",
    "Handler runs that used up their attempts and went to the dead-letter list.",
    ["handler"],
)
RECONCILE_RECOVERED = Counter(
    "reconcile_recovered_total",
    "Events the reconciler found at Stripe that had not reached us: the gap delivery left.",
)
SWEPT = Counter(
    "sweeper_requeued_total",
    "Pending handler runs the sweeper sent to the queue again.",
)
WEBHOOK_SECRET_MATCHES = Counter(
    "webhook_signature_secret_matches_total",
    "Verified webhooks by which configured secret matched (0 = first), and its endpoint's name. "
    "While rolling a secret or migrating an endpoint, the old one is unused once its count "
    "stops growing.",
    ["secret_index", "endpoint"],
)
EVENTS_REFUSED = Counter(
    "events_refused_total",
    "Events never applied, by reason (unsigned: a plain queue body; livemode_mismatch; "
    "account_not_served) and stage (webhook, ingest, reconcile, replay, quarantine).",
    ["reason", "stage"],
)
INGEST_UNDECRYPTABLE = Counter(
    "ingest_undecryptable_total",
    "Attempts at a queued body no configured key decrypts (a key rolled out to web before the "
    "workers, or a forgery); each is retried until UNDECRYPTABLE_RETRY_SECONDS.",
)
INGEST_QUARANTINED = Counter(
    "ingest_quarantined_total",
    "Queued bodies still undecryptable after UNDECRYPTABLE_RETRY_SECONDS, kept in the "
    "quarantined_events table for `payments events quarantine retry`.",
)
# "max": in multiprocess mode the newest success of any process, kept after that process exits.
RECONCILE_LAST_SUCCESS = Gauge(
    "reconcile_last_success_timestamp_seconds",
    "When a reconciler pass last finished with every listed event recorded or refused.",
    multiprocess_mode="max",
)


def reset_multiprocess_dir(directory: str | None) -> None:
    """Empty the directory at a process group's start: files of dead processes would count."""
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        Path(directory).mkdir(parents=True, exist_ok=True)


def mark_process_dead(directory: str | None, pid: int) -> None:
    if directory:
        multiprocess.mark_process_dead(pid, directory)


def scrape_registry(directory: str | None, *extra: Collector) -> CollectorRegistry:
    """The registry to expose: every process's samples in multiprocess mode, else this one's."""
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry = REGISTRY
    for collector in extra:
        registry.register(collector)
    return registry


class LedgerCollector(Collector):
    """Gauges read at scrape time from the source of truth: dead letters from PostgreSQL, queue
    depths from the broker. Errors reading either show as a missing sample, not a crash."""

    def __init__(
        self,
        count_dead: Callable[[], int],
        queue_depths: Callable[[], dict[str, int]],
        broker_dead_letters: Callable[[], int | None] = lambda: None,
        count_dead_effects: Callable[[], int | None] = lambda: None,
        count_held: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._count_dead = count_dead
        self._count_dead_effects = count_dead_effects
        self._count_held = count_held
        self._queue_depths = queue_depths
        self._broker_dead_letters = broker_dead_letters

    def collect(self) -> Iterable[Metric]:
        dead = GaugeMetricFamily("dead_letters", "Handler runs in the dead-letter list.")
        try:
            dead.add_metric([], self._count_dead())
        except Exception:
            # The scrape must answer even with the database down.
            log.warning("dead_letters: database unreachable", exc_info=True)
        yield dead
        yield from self._collect_dead_effects()
        depth = GaugeMetricFamily("queue_depth", "Messages waiting in a queue.", labels=["queue"])
        try:
            for queue, length in self._queue_depths().items():
                depth.add_metric([queue], length)
        except Exception:
            # The scrape must answer even with the broker down.
            log.warning("queue_depth: broker unreachable", exc_info=True)
        yield depth
        yield from self._collect_broker_dead_letters()

    def _collect_dead_effects(self) -> Iterable[Metric]:
        yield from _gauge(
            "effects_dead", "Side effects in the dead-letter list.", self._count_dead_effects
        )
        yield from _gauge(
            "held_runs",
            "Handler runs held: their event's API version is not one the handler reads.",
            self._count_held,
        )

    def _collect_broker_dead_letters(self) -> Iterable[Metric]:
        try:
            count = self._broker_dead_letters()
        except Exception:
            log.warning("broker_dead_letters: broker unreachable", exc_info=True)
            return
        if count is not None:  # only a broker with a dead-letter queue (RabbitMQ) has one
            gauge = GaugeMetricFamily(
                "broker_dead_letters",
                "Messages the broker dead-lettered past their delivery limit.",
            )
            gauge.add_metric([], count)
            yield gauge


def _gauge(name: str, documentation: str, count: Callable[[], int | None]) -> Iterable[Metric]:
    """A gauge read from the database at scrape time; no sample when it cannot be read."""
    try:
        value = count()
    except Exception:
        log.warning("%s: database unreachable", name, exc_info=True)
        return
    if value is not None:
        gauge = GaugeMetricFamily(name, documentation)
        gauge.add_metric([], value)
        yield gauge
