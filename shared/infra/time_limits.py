"""Celery's time limits for one attempt: the hard one kills it, the soft one comes first so the
attempt can clean up. The workers' task settings and the ledger's retry policy both use it."""

from __future__ import annotations

# The soft time limit comes this much before the hard one, so a handler can clean up.
SOFT_LIMIT_MARGIN_SECONDS = 10


def soft_time_limit(time_limit_seconds: float) -> float:
    """Celery's soft limit for an attempt with this hard limit: the time to clean up before."""
    return max(1, time_limit_seconds - SOFT_LIMIT_MARGIN_SECONDS)
