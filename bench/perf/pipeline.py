"""Pipeline figures for `make bench`: draining a queued backlog (ours against the naive pipeline),
and delivery-to-last-handler latency at a steady rate.

Drain: N events are queued with no worker running (ours through our /webhook, the naive ones
with Celery's send_task), then the worker starts. The clock starts when the worker takes the
first message (a queued Redis list first gets shorter; polled every 5 ms) and stops when every
handler run is seen done or dead (polled every 50 ms); events/s = N / that time. Worker boot
is not in the figure, and nothing is added to the measured code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.perf import events as perf_events
from bench.perf import handlers as bench_handlers
from bench.perf import naive_pipeline
from bench.perf.pacer import PaceResult, pace
from bench.perf.stack import WEBHOOK_SECRET, PerfStack
from devtools.processes import Process
from shared.ledger.handlers import registry

HANDLERS_PER_EVENT = len(registry.handlers_for(perf_events.EVENT_TYPE))
RUN_COUNTS = {
    "ours": "SELECT count(*) FILTER (WHERE status = 'done'), "
    "count(*) FILTER (WHERE status = 'dead') FROM handler_runs",
    "naive": "SELECT count(*) FILTER (WHERE status = 'done'), 0 FROM naive_runs",
}


@dataclass(frozen=True)
class Drain:
    events: int
    seconds: float
    done: int
    dead: int
    complete: bool
    start_seen_in_queue: bool

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _send_through_webhook(stack: PerfStack, bodies: list[tuple[str, str]], rate: float) -> None:
    deliveries = perf_events.sign(bodies, WEBHOOK_SECRET)
    host = f"127.0.0.1:{stack.web_port}"
    result = pace(stack.web_port, [d.http_request(host) for d in deliveries], rate, 16)
    if result.refused():
        raise RuntimeError(f"{result.refused()} of {len(bodies)} deliveries were refused")


def _wait_for_first_take(stack: PerfStack, backlog: dict[bytes, int], worker: Process) -> bool:
    deadline = time.monotonic() + 120
    while backlog and time.monotonic() < deadline and worker.alive():
        if any(stack.llen(key) < length for key, length in backlog.items()):
            return True
        time.sleep(0.005)
    return False


def _run_counts(stack: PerfStack, kind: str) -> tuple[int, int]:
    with stack.engine().connect() as conn:
        done, dead = conn.exec_driver_sql(RUN_COUNTS[kind]).one()
    return int(done), int(dead)


def drain(stack: PerfStack, kind: str, events: int, timeout: float) -> Drain:
    """Queue ``events`` events with the worker stopped, start it and time the drain."""
    stack.reset_data()
    bodies = perf_events.bodies(events)
    if kind == "ours":
        _send_through_webhook(stack, bodies, rate=2000)
    else:
        naive_pipeline.enqueue(naive_pipeline.make_app(stack.redis_url), [b for _, b in bodies])
    backlog = stack.queued()
    spawned = time.monotonic()
    worker = stack.start_worker(kind)
    seen = _wait_for_first_take(stack, backlog, worker)
    started = time.monotonic() if seen else spawned
    expected = events * HANDLERS_PER_EVENT
    done = dead = 0
    while time.monotonic() - started < timeout and worker.alive():
        done, dead = _run_counts(stack, kind)
        if done + dead >= expected:
            break
        time.sleep(0.05)
    finished = time.monotonic()
    stack.stop_process("worker-naive" if kind == "naive" else "worker")
    return Drain(events, finished - started, done, dead, done + dead >= expected, seen)


@dataclass(frozen=True)
class PipelineLatency:
    sent: int
    refused: int
    latencies: list[float]  # seconds, one per completed event
    incomplete: int
    pacing: PaceResult


def _done_events(stack: PerfStack) -> dict[str, float]:
    """When each event's last run committed done (wall-clock seconds), for complete events."""
    query = (
        "SELECT event_id, max(at) FROM (SELECT event_id, handler, min(at) AS at "
        "FROM bench_run_done GROUP BY 1, 2) runs GROUP BY 1 HAVING count(*) >= %(n)s"
    )
    with stack.engine().connect() as conn:
        rows = conn.exec_driver_sql(query, {"n": HANDLERS_PER_EVENT}).all()
    return {event_id: at.timestamp() for event_id, at in rows}


def _wait_for_events(stack: PerfStack, ids: set[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        done = _done_events(stack)
        if ids <= done.keys() or time.monotonic() > deadline:
            return done
        time.sleep(0.2)


def pipeline_latency(stack: PerfStack, rate: float, seconds: float) -> PipelineLatency:
    """Deliveries at a steady ``rate`` to our /webhook with our worker running; each event's
    latency runs from its scheduled send time to the commit that marked its last run done."""
    stack.reset_data()
    with stack.engine().begin() as conn:
        conn.exec_driver_sql(bench_handlers.DONE_TRIGGERS)
    stack.start_worker("ours")
    try:
        warm = perf_events.bodies(max(1, int(rate * 2)))
        _send_through_webhook(stack, warm, rate)
        _wait_for_events(stack, {event_id for event_id, _ in warm}, timeout=120)
        bodies = perf_events.bodies(max(1, int(rate * seconds)))
        deliveries = perf_events.sign(bodies, WEBHOOK_SECRET)
        host = f"127.0.0.1:{stack.web_port}"
        paced = pace(stack.web_port, [d.http_request(host) for d in deliveries], rate, 16)
        sent = {d.event_id: shot for d, shot in zip(deliveries, paced.shots, strict=True)}
        accepted = {event_id for event_id, shot in sent.items() if 200 <= shot.status < 300}
        done = _wait_for_events(stack, accepted, timeout=max(60.0, 4 * seconds))
    finally:
        stack.stop_process("worker")
        with stack.engine().begin() as conn:
            conn.exec_driver_sql(bench_handlers.DROP_DONE_TRIGGERS)
    latencies = [done[e] - (sent[e].due + paced.wall_offset) for e in accepted if e in done]
    return PipelineLatency(
        sent=len(deliveries),
        refused=len(deliveries) - len(accepted),
        latencies=latencies,
        incomplete=len(accepted - done.keys()),
        pacing=paced,
    )
