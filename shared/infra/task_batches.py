"""Handing a task's first deliveries to the worker's pool in batches.

A Celery task runs one message per pool job; the events queue's costs per job (a transaction,
a trip to the pool and back) were most of an event's. ``batching_strategy`` is a task
``Strategy``: Celery's default one (it decodes the message, logs it, sends the received event,
keeps ETA and rate limits) with the last step changed. A request ready to run is held, and the
held ones go to the pool together as one job of ``run_batch``, which returns the keys (task
ids) it did not settle. Every other request then succeeds as if it had run alone: acknowledged
after the job returned (late acks stay late), its events sent, its state kept for ``inspect``.

- **When a batch goes.** At once while a pool process is free of our batches, so a quiet
  queue waits for nothing; otherwise when a batch comes back or ``max_batch`` are held. Under
  load, batches grow by themselves to what arrived while the last one ran.
- **What never batches.** A redelivered message (its first delivery may have killed a worker):
  it runs alone, as an ordinary task. So does what ``run_batch`` hands back.
- **When the job fails.** A pool process lost (killed, or past the hard time limit) rejects
  every request of its batch back to the queue, as Celery does for one task
  (``task_reject_on_worker_lost``, ``task_acks_on_timeout=False``); they come back
  redelivered, so each then runs alone. Any other failure of the job runs each request alone.
- **Prefetch.** A held request is unacknowledged, so the worker's prefetch must leave room for
  batches in flight and one filling (``prefetch_multiplier``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from billiard.exceptions import Terminated, TimeLimitExceeded, WorkerLostError

log = logging.getLogger(__name__)

# A batch's key, the message's positional arguments and its keyword arguments.
BatchItem = tuple[str, list[Any], dict[str, Any]]
RunBatch = Callable[[list[BatchItem]], list[str]]

# A batch held this long goes to the pool even though every process is busy (a safety net:
# a batch coming back sends the next one).
MAX_HOLD_SECONDS = 1.0


def prefetch_multiplier(max_batch: int) -> int:
    """Enough unacknowledged messages per pool process for its batch in flight and the next
    one filling; 1 (Celery's strictest) without batching."""
    return 1 if max_batch <= 1 else 2 * max_batch


def batching_strategy(run_batch: RunBatch, max_batch: int) -> Callable[..., Any]:
    """A task ``Strategy`` that runs first deliveries in batches of up to ``max_batch``."""

    def strategy(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Any:
        # Imported here: the web process reads prefetch_multiplier and needs no worker code.
        from celery.concurrency.prefork import TaskPool
        from celery.worker.strategy import default as default_strategy

        if max_batch <= 1 or not isinstance(consumer.pool, TaskPool):
            # Solo and thread pools call back from elsewhere, or never with an error.
            return default_strategy(task, app, consumer, **kwargs)
        batcher = Batcher(consumer, task, run_batch, max_batch)
        # A new strategy means a new connection: what the last one held unsent is the broker's
        # to deliver again (its delivery tags died with their channel).
        retired = _batchers.pop(task.name, None)
        if retired is not None:
            retired.retire()
        _batchers[task.name] = batcher
        return default_strategy(task, app, _HandOffTo(consumer, batcher.take), **kwargs)

    return strategy


_batchers: dict[str, Batcher] = {}


def redelivered(request: Any) -> bool:
    """Whether the broker delivers this message again (its first delivery's worker died); a
    Celery retry is a new message, not a redelivery. ``request`` is a worker's request or a
    task's ``self.request``: both carry the broker's ``delivery_info``."""
    return bool((getattr(request, "delivery_info", None) or {}).get("redelivered"))


class _HandOffTo:
    """The consumer as Celery's default strategy sees it, but for where a ready request goes."""

    def __init__(self, consumer: Any, on_task_request: Callable[[Any], None]) -> None:
        self._consumer = consumer
        self.on_task_request = on_task_request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


class Batcher:
    """The requests of one task held in the worker's main process, and its batches in flight."""

    def __init__(self, consumer: Any, task: Any, run_batch: RunBatch, max_batch: int) -> None:
        self._pool = consumer.pool
        self._run_alone: Callable[[Any], None] = consumer.on_task_request
        self._timer = consumer.timer
        self._task = task
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._held: list[Any] = []
        self._in_flight = 0
        self._hold_timer: Any = None
        self._retired = False

    def retire(self) -> None:
        """Give back what is held unsent (a reconnect, a pool restart); batches in flight
        still end as they would."""
        self._retired = True
        held, self._held = self._held, []
        for request in held:
            _guarded(lambda held_request: held_request.reject(requeue=True), request)

    def take(self, request: Any) -> None:
        if redelivered(request):
            self._run_alone(request)
            return
        self._held.append(request)
        if len(self._held) >= self._max_batch or self._in_flight < self._processes():
            self._send()
        elif self._hold_timer is None:
            self._hold_timer = self._timer.call_after(MAX_HOLD_SECONDS, self._on_hold_timer)

    def _processes(self) -> int:
        return int(getattr(self._pool, "num_processes", None) or 1)

    def _on_hold_timer(self) -> None:
        self._hold_timer = None
        if self._held and not self._retired:
            self._send()

    def _send(self) -> None:
        batch, self._held = self._next_batch()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        items = [(request.id, list(request.args), dict(request.kwargs)) for request in batch]
        # Counted first: a pool that runs jobs inline calls back before returning.
        self._in_flight += 1
        self._pool.apply_async(
            self._run_batch,
            args=(items,),
            accept_callback=partial(_accepted, batch),
            timeout_callback=partial(_timed_out, batch),
            callback=partial(self._returned, batch, time.monotonic()),
            error_callback=partial(self._failed, batch),
            soft_timeout=self._task.soft_time_limit,
            timeout=self._task.time_limit,
        )

    def _next_batch(self) -> tuple[list[Any], list[Any]]:
        """Up to max_batch held requests, one per task id (a message published twice with one
        id is a request the batch's answer could not tell apart: the second waits its turn)."""
        batch: list[Any] = []
        later: list[Any] = []
        ids: set[str] = set()
        for request in self._held:
            if len(batch) < self._max_batch and request.id not in ids:
                batch.append(request)
                ids.add(request.id)
            else:
                later.append(request)
        return batch, later

    def _returned(self, batch: list[Any], sent_at: float, alone: list[str]) -> None:
        self._in_flight -= 1
        runtime = time.monotonic() - sent_at
        unsettled = set(alone)
        try:
            for request in batch:
                _settle(request, runtime, request.id in unsettled, self._run_alone)
        finally:
            self._send_next()

    def _failed(self, batch: list[Any], exc_info: Any) -> None:
        self._in_flight -= 1
        try:
            error = exc_info.exception
            error = getattr(error, "exc", error)  # billiard's ExceptionWithTraceback
            if isinstance(error, (WorkerLostError, TimeLimitExceeded, Terminated, SystemExit)):
                # Its pool process was lost (killed, past the hard time limit, terminated on a
                # lost connection): each request ends as Celery ends one task lost so, given
                # back to the queue, to come back redelivered and run alone.
                for request in batch:
                    _guarded(request.on_failure, exc_info)
                return
            # run_batch hands back what it cannot settle and does not raise, but a soft time
            # limit can strike anywhere in it: each request runs alone, its attempt counted.
            log.error("a batch of %d failed (%r); running each alone", len(batch), error)
            for request in batch:
                _settle(request, 0.0, True, self._run_alone)
        finally:
            self._send_next()

    def _send_next(self) -> None:
        if self._held and not self._retired:
            self._send()


def _settle(request: Any, runtime: float, alone: bool, run_alone: Callable[[Any], None]) -> None:
    if not alone:
        _guarded(request.on_success, (False, None, runtime))
        return
    # Its handlers may have run in a transaction that did not commit: it goes the way of a
    # redelivery, which counts that attempt. It is no longer in the batch's pool process.
    request.delivery_info["redelivered"] = True
    request.worker_pid = request.time_start = None
    _guarded(run_alone, request)


def _guarded(call: Callable[[Any], Any], arg: Any) -> None:
    """One request's end must not keep the others of its batch from theirs."""
    try:
        call(arg)
    except Exception:
        log.exception("could not settle one request of a batch")


def _accepted(batch: list[Any], pid: int, time_accepted: float) -> None:
    for request in batch:
        request.on_accepted(pid, time_accepted)


def _timed_out(batch: list[Any], soft: bool, timeout: float) -> None:
    for request in batch:
        request.on_timeout(soft, timeout)
