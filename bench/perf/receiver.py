"""Receiver figures for `make bench`: wrk throughput and open-loop latency, ours against bare.

Every server gets the same file of signed deliveries (signed once per round, just before it),
a warm-up run that is thrown away, then the measured run; Redis is emptied before and after
each. Rounds rotate which server goes first, and each server's best round is reported.
The servers: ours, and the two bare comparators of bench/perf/bare_receiver.py.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.perf import events as perf_events
from bench.perf.pacer import PaceResult, pace
from bench.perf.stack import WEBHOOK_SECRET, PerfStack

WRK_SCRIPT = Path(__file__).with_name("wrk_replay.lua")
WRK_MISSING = "make bench needs wrk (Debian: apt-get install -y -qq --no-install-recommends wrk)"


@dataclass(frozen=True)
class Throughput:
    accepted: int
    refused: int
    socket_errors: int
    seconds: float
    client_cpu: float  # wrk's CPU seconds per wall second
    p99_ms: float  # wrk's own (closed-loop) figure, for reference only

    @property
    def per_second(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit(WRK_MISSING)
    return wrk


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    port: int, requests: Path, seconds: float, connections: int, threads: int
) -> Throughput:
    cpu_before = _children_cpu()
    duration = max(1, round(seconds))  # wrk takes whole seconds
    command = [require_wrk(), "-t", str(threads), "-c", str(connections), "-d", f"{duration}s"]
    command += ["-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}", "--", str(requests)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout} {done.stderr}")
    line = lines[0]
    fields = dict(part.split("=") for part in line.split()[1:])
    wall = int(fields["duration_us"]) / 1e6
    return Throughput(
        accepted=int(fields["accepted"]),
        refused=int(fields["refused"]),
        socket_errors=int(fields["socket_errors"]),
        seconds=wall,
        client_cpu=(_children_cpu() - cpu_before) / wall if wall else 0.0,
        p99_ms=int(fields["p99_us"]) / 1000,
    )


@dataclass(frozen=True)
class ReceiverSettings:
    seconds: float
    warmup: float
    rounds: int
    connections: int
    threads: int
    distinct_events: int
    latency_rate: float
    latency_seconds: float
    pacer_connections: int


def throughput(stack: PerfStack, cfg: ReceiverSettings) -> dict[str, list[Throughput]]:
    """Each server's wrk runs, one per round."""
    servers = {"ours": stack.web_port, **stack.bare_ports}
    runs: dict[str, list[Throughput]] = {name: [] for name in servers}
    bodies = perf_events.bodies(cfg.distinct_events)
    for round_number in range(cfg.rounds):
        requests = perf_events.write_for_wrk(
            perf_events.sign(bodies, WEBHOOK_SECRET), stack.workdir / "wrk-requests.txt"
        )
        # Each round starts with a different server: none always runs first or last.
        names = list(servers)
        order = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in order:
            stack.redis().flushdb()
            run_wrk(servers[name], requests, cfg.warmup, cfg.connections, cfg.threads)
            stack.redis().flushdb()
            runs[name].append(
                run_wrk(servers[name], requests, cfg.seconds, cfg.connections, cfg.threads)
            )
        stack.redis().flushdb()
    return runs


def latency(stack: PerfStack, cfg: ReceiverSettings) -> dict[str, PaceResult]:
    """Each server at a constant ``latency_rate``, open-loop, the same signed deliveries."""
    servers = {"ours": stack.web_port, **stack.bare_ports}
    count = max(1, int(cfg.latency_rate * cfg.latency_seconds))
    warmup = max(1, int(cfg.latency_rate * min(cfg.warmup, cfg.latency_seconds)))
    bodies = perf_events.bodies(min(count, cfg.distinct_events))
    results = {}
    for name, port in servers.items():
        deliveries = perf_events.sign(bodies, WEBHOOK_SECRET)
        payloads = [d.http_request(f"127.0.0.1:{port}") for d in deliveries]
        stack.redis().flushdb()
        pace(port, [payloads[i % len(payloads)] for i in range(warmup)], cfg.latency_rate)
        stack.redis().flushdb()
        paced = [payloads[i % len(payloads)] for i in range(count)]
        results[name] = pace(port, paced, cfg.latency_rate, cfg.pacer_connections)
    stack.redis().flushdb()
    return results
