"""When the worker's main process sends held first deliveries to the pool, and what each request
becomes when its batch comes back (shared.infra.task_batches), with a pool that records jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError

from shared.infra.task_batches import Batcher, prefetch_multiplier


@dataclass
class Job:
    items: list[Any]
    kwargs: dict[str, Any]

    def returns(self, alone: list[str]) -> None:
        self.kwargs["callback"](alone)

    def fails(self, error: Exception) -> None:
        try:
            raise error
        except Exception:  # noqa: BLE001 - billiard's ExceptionInfo reads the one being handled
            self.kwargs["error_callback"](ExceptionInfo())


@dataclass
class Pool:
    num_processes: int = 2
    jobs: list[Job] = field(default_factory=list)

    def apply_async(self, fun: Any, args: tuple[Any, ...], **kwargs: Any) -> None:
        self.jobs.append(Job(args[0], kwargs))


class Timer:
    def __init__(self) -> None:
        self.pending: list[Any] = []

    def call_after(self, seconds: float, fun: Any) -> Any:
        self.pending.append(fun)
        return self

    def cancel(self) -> None:
        self.pending.clear()


@dataclass
class Request:
    id: str
    redelivered: bool = False
    outcome: list[str] = field(default_factory=list)
    args: tuple[str, ...] = ("body",)
    kwargs: dict[str, Any] = field(default_factory=dict)
    delivery_info: dict[str, Any] = field(default_factory=dict)
    worker_pid: int | None = None
    time_start: float | None = None

    def __post_init__(self) -> None:
        self.delivery_info["redelivered"] = self.redelivered

    def reject(self, requeue: bool) -> None:
        self.outcome.append(f"rejected, requeue={requeue}")

    def on_success(self, result: Any) -> None:
        self.outcome.append("acknowledged")

    def on_failure(self, exc_info: Any) -> None:
        error = exc_info.exception
        self.outcome.append(f"failed: {type(getattr(error, 'exc', error)).__name__}")

    def on_accepted(self, pid: int, at: float) -> None:
        self.outcome.append("accepted")


class Task:
    name = "payments.ingest_event"
    time_limit = 10
    soft_time_limit = 1


def make_batcher(max_batch: int = 3) -> tuple[Batcher, Pool, Timer, list[Request]]:
    pool, timer, alone = Pool(), Timer(), []

    class Consumer:
        def __init__(self) -> None:
            self.pool, self.timer = pool, timer

        def on_task_request(self, request: Request) -> None:
            alone.append(request)

    batcher = Batcher(Consumer(), Task(), lambda items: [], max_batch)
    return batcher, pool, timer, alone


def ids(job: Job) -> list[str]:
    return [key for key, _, _ in job.items]


def test_a_free_pool_process_takes_a_request_at_once_and_busy_ones_let_requests_gather():
    batcher, pool, timer, _ = make_batcher(max_batch=10)
    for name in "abcde":
        batcher.take(Request(name))

    # Two processes: the first two requests went at once, alone; the rest wait for a batch.
    assert [ids(job) for job in pool.jobs] == [["a"], ["b"]]
    assert timer.pending, "a safety timer sends them should no batch come back"
    pool.jobs[0].returns([])
    assert ids(pool.jobs[2]) == ["c", "d", "e"]


def test_a_full_batch_goes_even_while_every_process_is_busy():
    batcher, pool, _, _ = make_batcher(max_batch=3)
    for name in "abcde":
        batcher.take(Request(name))

    assert [ids(job) for job in pool.jobs] == [["a"], ["b"], ["c", "d", "e"]]


def test_a_redelivered_message_runs_alone_as_an_ordinary_task():
    batcher, pool, _, alone = make_batcher()
    again = Request("a", redelivered=True)

    batcher.take(again)

    assert alone == [again] and pool.jobs == []


def test_each_request_ends_as_its_batch_says():
    batcher, pool, _, alone = make_batcher()
    batcher.take(settled := Request("a"))
    batcher.take(unread := Request("b"))
    first, second = pool.jobs

    first.returns([])
    second.returns(["b"])

    assert settled.outcome == ["acknowledged"]
    # Handed back: it runs alone, the way of a redelivery, which counts the attempt its
    # handlers may have made in the batch's transaction.
    assert alone == [unread] and unread.outcome == []
    assert unread.delivery_info["redelivered"] is True


def test_a_lost_pool_process_gives_its_batch_back_and_any_other_failure_runs_it_alone():
    batcher, pool, _, alone = make_batcher()
    batcher.take(killed := Request("a"))
    batcher.take(broken := Request("b"))
    first, second = pool.jobs

    first.fails(WorkerLostError("the pool process exited"))
    second.fails(RuntimeError("a bug in the batch"))

    assert killed.outcome == ["failed: WorkerLostError"]
    assert alone == [broken] and broken.outcome == []
    assert broken.delivery_info["redelivered"] is True


def test_a_retired_batcher_sends_nothing_it_held():
    batcher, pool, timer, _ = make_batcher(max_batch=10)
    held = [Request(name) for name in "abc"]
    for request in held:
        batcher.take(request)

    batcher.retire()
    assert held[2].outcome == ["rejected, requeue=True"]
    pool.jobs[0].returns([])
    for fire in timer.pending:
        fire()

    assert [ids(job) for job in pool.jobs] == [["a"], ["b"]]


def test_two_messages_with_one_task_id_never_share_a_batch():
    batcher, pool, _, _ = make_batcher(max_batch=10)
    for name in ["a", "b", "c", "c", "d"]:
        batcher.take(Request(name))

    pool.jobs[0].returns([])
    pool.jobs[1].returns([])

    assert [ids(job) for job in pool.jobs] == [["a"], ["b"], ["c", "d"], ["c"]]


def test_prefetch_leaves_room_for_a_batch_in_flight_and_one_filling():
    assert prefetch_multiplier(50) == 100
    assert prefetch_multiplier(1) == 1
