"""`make bench-capacity`: the measurements behind the README's capacity model.

For each broker, its own Redis and then its own RabbitMQ node (quorum queues, publisher
confirms), on this machine, with its own database on the machine's PostgreSQL:

- receiver: the Procfile `web` line (gunicorn, 2 workers) under wrk (16 connections, signed
  2 KB events): accepted deliveries/s, and CPU milliseconds per delivery spent by the web
  processes and by the broker;
- pipeline: N events queued through /webhook with no worker running, then the Procfile `worker`
  line with ``--concurrency`` 1 and then 2 drains them: events/s (from the first handler effect
  to the last, timestamped in the database), and CPU milliseconds per event spent by the worker
  (parent and pool), by PostgreSQL (the backends serving this database) and by the broker.

CPU is read from /proc before and after each measurement, so the figures say what each part
costs per event and so which one saturates first as load grows. Nothing is asserted.

    make bench-capacity
    python -m bench.perf.capacity --events 1000 --brokers redis
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.perf import events as perf_events
from bench.perf import pipeline as perf_pipeline
from bench.perf.receiver import run_wrk
from bench.perf.stack import WEBHOOK_SECRET, PerfStack
from devtools.processes import procfile_command
from devtools.rabbitmq import OwnRabbitNode
from shared.config import load_settings
from shared.infra.broker import make_producer

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pick: Callable[[int, str], bool]) -> float:
    """CPU seconds (user + system) used so far by every live process ``pick(pid, cmdline)``
    selects."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited meanwhile
        if pick(int(entry.name), cmdline):
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def in_group(pgid: int) -> Callable[[int, str], bool]:
    def pick(pid: int, _cmdline: str) -> bool:
        try:
            return os.getpgid(pid) == pgid
        except OSError:
            return False

    return pick


def serving_database(name: str) -> Callable[[int, str], bool]:
    # A backend's title is "postgres: user database host(port) state".
    return lambda _pid, cmdline: cmdline.startswith("postgres:") and f" {name} " in cmdline


@dataclass
class Meter:
    """CPU seconds per part, between ``start()`` and ``stop()``."""

    parts: dict[str, Callable[[int, str], bool]]

    def start(self) -> None:
        self.before = {name: cpu_seconds(pick) for name, pick in self.parts.items()}

    def stop(self) -> dict[str, float]:
        return {name: cpu_seconds(pick) - self.before[name] for name, pick in self.parts.items()}


class Broker:
    """Where the stack's Celery messages go: the stack's own Redis, or a RabbitMQ node."""

    def __init__(self, kind: str, stack: PerfStack) -> None:
        self.kind = kind
        self.node = OwnRabbitNode(stack.workdir / "rabbitmq") if kind == "rabbitmq" else None
        if self.node is not None:
            stack.env["BROKER_URL"] = self.node.url

    def start(self) -> None:
        if self.node is not None:
            self.node.start()

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()

    def meter(self, stack: PerfStack) -> Callable[[int, str], bool]:
        if self.node is None:
            return in_group(os.getpgid(stack.processes["redis"].proc.pid))
        # The node's Erlang VM, named on its command line.
        name = self.node.name
        return lambda _pid, cmdline: "beam" in cmdline and name in cmdline


def receiver(stack: PerfStack, broker: Broker, seconds: float) -> dict[str, float]:
    bodies = perf_events.bodies(2000)
    requests = perf_events.write_for_wrk(
        perf_events.sign(bodies, WEBHOOK_SECRET), stack.workdir / "wrk-requests.txt"
    )
    web_group = in_group(os.getpgid(stack.processes["web"].proc.pid))
    meter = Meter({"web": web_group, "broker": broker.meter(stack)})
    run_wrk(stack.web_port, requests, 2, 16, 2)  # warm-up, thrown away
    meter.start()
    result = run_wrk(stack.web_port, requests, seconds, 16, 2)
    cpu = meter.stop()
    accepted = max(result.accepted, 1)
    return {
        "deliveries_per_second": result.per_second,
        "refused": result.refused,
        "web_cpu_ms": 1000 * cpu["web"] / accepted,
        "broker_cpu_ms": 1000 * cpu["broker"] / accepted,
    }


def drain(stack: PerfStack, broker: Broker, events: int, concurrency: int) -> dict[str, float]:
    stack.reset_data()
    purge_queues(stack)
    perf_pipeline._send_through_webhook(stack, perf_events.bodies(events), rate=1500)
    args = procfile_command("worker", 0)
    args[args.index("--concurrency") + 1] = str(concurrency)
    worker = stack._start("worker", args, stack.process_env("worker", "worker"))
    meter = Meter(
        {
            "worker": in_group(os.getpgid(worker.proc.pid)),
            "postgres": serving_database(stack.db_name),
            "broker": broker.meter(stack),
        }
    )
    # From the first effect on: the worker's start-up (imports, connections) is not per event.
    at_start = wait_for_effects(stack, 1, worker_alive=worker.alive)
    meter.start()
    done = wait_for_effects(stack, events, worker_alive=worker.alive)
    cpu = meter.stop()
    stack.stop_process("worker")
    first, last = effect_span(stack)
    metered = max(done - at_start, 1)
    return {
        "events_per_second": (done - 1) / (last - first) if last > first else 0.0,
        "complete": float(done == events),
        **{f"{name}_cpu_ms": 1000 * seconds / metered for name, seconds in cpu.items()},
    }


def purge_queues(stack: PerfStack) -> None:
    """Start each drain on empty queues, whatever the broker."""
    app = make_producer(load_settings(stack.env))
    with app.connection_for_write() as connection:
        for queue in app.amqp.queues.values():
            queue(connection.default_channel).declare()
            queue(connection.default_channel).purge()
    app.close()


def wait_for_effects(stack: PerfStack, events: int, worker_alive: Callable[[], bool]) -> int:
    deadline = time.monotonic() + 600
    done = 0
    while time.monotonic() < deadline and worker_alive():
        with stack.engine().connect() as conn:
            done = int(conn.exec_driver_sql("SELECT count(*) FROM bench_effects").scalar_one())
        if done >= events:
            break
        time.sleep(0.1)
    return done


def effect_span(stack: PerfStack) -> tuple[float, float]:
    with stack.engine().connect() as conn:
        first, last = conn.exec_driver_sql("SELECT min(at), max(at) FROM bench_effects").one()
    return first.timestamp(), last.timestamp()


def measure(kind: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    stack = PerfStack(args.pg_server)
    broker = Broker(kind, stack)
    try:
        broker.start()
        stack.start()
        figures = {"receiver": receiver(stack, broker, args.seconds)}
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            figures[f"worker x{concurrency}"] = drain(stack, broker, args.events, concurrency)
        return figures
    finally:
        stack.stop()
        broker.stop()


def print_table(results: dict[str, dict[str, dict[str, float]]]) -> None:
    print("| broker | measure | figure |")
    print("|---|---|---|")
    for kind, figures in results.items():
        for measure_name, values in figures.items():
            for name, value in values.items():
                print(f"| {kind} | {measure_name}: {name} | {value:,.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--brokers", default="redis,rabbitmq")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument(
        "--concurrency", default="1,2", help="the worker's pool sizes to drain with"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="the receiver's wrk run")
    parser.add_argument("--pg-server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = {kind: measure(kind, args) for kind in args.brokers.split(",")}
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
