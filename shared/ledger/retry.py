"""The retry policy: attempts, backoff, leases and time limits, decided in one place.

Built once from the settings (``RetryPolicy.from_settings``) and used by the handler runs, the
ingest task and the Celery task settings alike. The decisions are pure functions of the attempt
count and the error, so they are tested without a worker; the Celery tasks only translate them
(``self.retry(countdown=...)`` or return).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from shared.config import Settings
from shared.infra.errors import is_transient
from shared.infra.time_limits import soft_time_limit

# Redis redelivers a message its worker holds longer than the visibility timeout, and a task
# waiting out its countdown is held by the worker: a countdown stays well below that timeout.
MAX_COUNTDOWN_SECONDS = 900.0
# A lease outlives the hard time limit by this much, so a live attempt is never taken over.
LEASE_MARGIN_SECONDS = 5.0
# Ingest is cheap and its message is the only copy of the event until it commits: retry it
# quickly and for ever (transient) or a few times (permanent).
INGEST_MAX_COUNTDOWN_SECONDS = 30.0


@dataclass(frozen=True)
class Retry:
    countdown: float


@dataclass(frozen=True)
class GiveUp:
    """No attempts left: the run is dead (handlers) or the message dropped (ingest)."""


RetryDecision = Retry | GiveUp


def soft_time_limit_of_lease(lease_seconds: float) -> float:
    """The soft limit of the attempt a lease of ``lease_seconds`` covers (see lease_seconds)."""
    return soft_time_limit(lease_seconds - LEASE_MARGIN_SECONDS)


@dataclass(frozen=True)
class RetryPolicy:
    max_transient_attempts: int
    max_permanent_attempts: int
    base_seconds: float
    cap_seconds: float
    # The hard time limit of one handler attempt (Celery kills it then).
    time_limit_seconds: float = 300
    jitter: Callable[[float, float], float] = random.uniform

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_transient_attempts=settings.handler_max_attempts,
            max_permanent_attempts=settings.handler_max_permanent_attempts,
            base_seconds=settings.retry_base_seconds,
            cap_seconds=min(MAX_COUNTDOWN_SECONDS, settings.visibility_timeout_seconds / 4),
            time_limit_seconds=settings.handler_time_limit_seconds,
        )

    def overridden(
        self,
        max_attempts: int | None,
        time_limit_seconds: int | None,
        base_seconds: float | None = None,
    ) -> RetryPolicy:
        """This policy with a handler's own attempts, time limit and first backoff ceiling,
        where it has them."""
        policy = self if base_seconds is None else replace(self, base_seconds=base_seconds)
        if max_attempts is not None:
            permanent = min(self.max_permanent_attempts, max_attempts)
            policy = replace(
                policy, max_transient_attempts=max_attempts, max_permanent_attempts=permanent
            )
        if time_limit_seconds is not None:
            policy = replace(policy, time_limit_seconds=time_limit_seconds)
        return policy

    @property
    def lease_seconds(self) -> float:
        """How long one attempt holds its run: another delivery leaves it alone meanwhile."""
        return self.time_limit_seconds + LEASE_MARGIN_SECONDS

    @property
    def soft_time_limit_seconds(self) -> float:
        return soft_time_limit(self.time_limit_seconds)

    def limit_for(self, error: BaseException) -> int:
        return self.max_transient_attempts if is_transient(error) else self.max_permanent_attempts

    def countdown(self, attempts: int) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempts)]."""
        ceiling = min(self.cap_seconds, self.base_seconds * (2 ** max(0, attempts - 1)))
        return self.jitter(0, ceiling)

    def after_failure(self, attempts: int, error: BaseException) -> RetryDecision:
        """A handler run failed on its ``attempts``-th attempt."""
        if attempts >= self.limit_for(error):
            return GiveUp()
        return Retry(self.countdown(attempts))

    def after_ingest_failure(self, attempts: int, error: BaseException) -> RetryDecision:
        """Recording a queued event failed. Nothing is recorded yet, so the event lives only in
        the message: a transient failure is retried for ever; a permanent one a few times, then
        left to the reconciler (the event stays listed at Stripe)."""
        if not is_transient(error) and attempts >= self.max_permanent_attempts:
            return GiveUp()
        return Retry(min(self.countdown(attempts), INGEST_MAX_COUNTDOWN_SECONDS))

    def while_leased(self) -> Retry:
        """Another delivery holds the run: look again once its lease must have ended."""
        return Retry(self.lease_seconds + 1)
