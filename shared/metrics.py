"""Prometheus metrics, defined once and shared by every process."""

from __future__ import annotations

from prometheus_client import Counter

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
    "Verified webhooks by which configured secret matched (0 = first). While rolling a secret, "
    "the old one is unused once its count stops growing.",
    ["secret_index"],
)
