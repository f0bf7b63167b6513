"""Optional soak for `make bench SOAK=600`: a steady rate through our web and worker for a while.

Deliveries go to /webhook open-loop in segments of up to 30 s (each signed just before it is
sent). Every few seconds a sampler notes the resident memory (RSS) of the web and worker
process groups and the number of messages waiting in Redis lists. The baseline is
the first sample after the first segment (imports and pools warmed up); the change is the last
sample against it. Error lines are the ERROR/CRITICAL/Traceback lines the web and worker
logged during the soak.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.perf import events as perf_events
from bench.perf.pacer import pace
from bench.perf.stack import WEBHOOK_SECRET, PerfStack

SEGMENT_SECONDS = 30.0
ERROR_LINE = re.compile(rb"\b(ERROR|CRITICAL)\b|Traceback")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def group_rss(pgid: int) -> int:
    """Resident bytes of every process in the process group ``pgid`` (its leader and the
    children it forked): with psutil when it is installed, else from /proc."""
    try:
        import psutil
    except ImportError:
        return _proc_group_rss(pgid)
    try:
        leader = psutil.Process(pgid)
        family = [leader, *leader.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in family:
        with contextlib.suppress(psutil.Error):
            total += int(process.memory_info().rss)
    return total


def _proc_group_rss(pgid: int) -> int:
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                total += int((stat.parent / "statm").read_text().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return total


@dataclass
class Sample:
    at: float
    web_rss: int
    worker_rss: int
    queued: int


@dataclass
class Soak:
    seconds: float
    sent: int = 0
    refused: int = 0
    samples: list[Sample] = field(default_factory=list)
    baseline: int = 0  # index of the baseline sample
    error_lines: int = 0

    def change(self, attribute: str) -> float:
        """Percent change of ``attribute`` from the baseline sample to the last one."""
        if not self.samples:
            return 0.0
        first = getattr(self.samples[min(self.baseline, len(self.samples) - 1)], attribute)
        last = getattr(self.samples[-1], attribute)
        return 100.0 * (last - first) / first if first else 0.0

    def max_queued(self) -> int:
        return max((sample.queued for sample in self.samples), default=0)


def _sample(stack: PerfStack, soak: Soak, stop: threading.Event, every: float) -> None:
    web, worker = stack.processes["web"], stack.processes["worker"]
    started = time.monotonic()
    while True:
        soak.samples.append(
            Sample(
                time.monotonic() - started,
                group_rss(web.proc.pid),
                group_rss(worker.proc.pid),
                sum(stack.queued().values()),
            )
        )
        if stop.wait(every):
            return


def _errors_since(path: Path, offset: int) -> int:
    with path.open("rb") as log:
        log.seek(offset)
        return sum(1 for line in log if ERROR_LINE.search(line))


def soak(stack: PerfStack, seconds: float, rate: float, every: float = 5.0) -> Soak:
    stack.reset_data()
    stack.start_worker("ours")
    logs = [stack.processes[name].log_path for name in ("web", "worker")]
    offsets = [path.stat().st_size for path in logs]
    result = Soak(seconds)
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(stack, result, stop, every), daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        while (remaining := seconds - (time.monotonic() - started)) > 1:
            segment = min(SEGMENT_SECONDS, remaining)
            bodies = perf_events.bodies(max(1, int(rate * segment)))
            deliveries = perf_events.sign(bodies, WEBHOOK_SECRET)
            host = f"127.0.0.1:{stack.web_port}"
            paced = pace(stack.web_port, [d.http_request(host) for d in deliveries], rate, 16)
            result.sent += len(paced.shots)
            result.refused += paced.refused()
            if not result.baseline:
                result.baseline = len(result.samples)
    finally:
        stop.set()
        sampler.join()
    result.seconds = time.monotonic() - started
    result.error_lines = sum(_errors_since(p, o) for p, o in zip(logs, offsets, strict=True))
    stack.stop_process("worker")
    return result
