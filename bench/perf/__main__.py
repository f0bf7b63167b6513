"""`make bench`: issue 12's measurements, ours beside the comparators in one run, as one table.

Starts its own redis-server, its own database on the machine's PostgreSQL (dropped at the
end) and the Stripe stand-in on spare ports, then runs ours (the Procfile `web` and `worker`
lines) and the comparators written in bench/ (bare_receiver.py, naive_pipeline.py) one after
the other on the same machine, and prints a Markdown table with ratios. No figure is asserted:
the table is for people. The modules named in each row say how it is measured.

    make bench                      # defaults: a few minutes
    make bench-small                # tiny sizes, about a minute (CI proves it still works)
    make bench SOAK=600             # plus a 10-minute soak
    python -m bench.perf --phases pipeline --events 5000
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from bench.perf import pipeline as perf_pipeline
from bench.perf import receiver as perf_receiver
from bench.perf import report as perf_report
from bench.perf.rows import Table, payment_rows, pipeline_rows, receiver_rows, soak_rows
from bench.perf.stack import PerfStack
from devtools.processes import REPO_ROOT

PHASES = ("receiver", "pipeline", "payments")
SMALL = {
    "seconds": 1.5,
    "warmup": 0.5,
    "rounds": 1,
    "latency_seconds": 1.5,
    "events": 300,
    "pipeline_seconds": 2.0,
    "create_calls": 30,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.perf",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--small", action="store_true", help="tiny sizes (about a minute): " + str(SMALL))
    add("--phases", default=",".join(PHASES), help="comma-separated subset of " + str(PHASES))
    add("--seconds", type=float, default=10.0, help="each measured wrk run")
    add("--warmup", type=float, default=2.0, help="each warm-up run, thrown away")
    add("--rounds", type=int, default=3, help="wrk rounds, rotating who goes first; best reported")
    add("--connections", type=int, default=16, help="wrk connections")
    add("--wrk-threads", type=int, default=2)
    add("--distinct-events", type=int, default=2000, help="signed deliveries wrk cycles through")
    add("--latency-rate", type=float, default=1000.0, help="constant deliveries/s")
    add("--latency-seconds", type=float, default=10.0)
    add("--pacer-connections", type=int, default=64)
    add("--events", type=int, default=3000, help="queued events each pipeline drains")
    add("--drain-timeout", type=float, default=600.0)
    add("--pipeline-rate", type=float, default=200.0, help="steady events/s for the latency")
    add("--pipeline-seconds", type=float, default=15.0)
    add("--create-calls", type=int, default=200, help="calls each, ours and the direct SDK")
    add("--soak", type=float, default=0.0, help="seconds of soak after the rest (0: none)")
    add("--soak-rate", type=float, default=100.0)
    add("--pg-server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    add("--out", type=Path, default=REPO_ROOT / "test-artifacts" / "bench")
    args = parser.parse_args(argv)
    if args.small:
        for name, value in SMALL.items():
            setattr(args, name, value)
    args.phases = [phase.strip() for phase in args.phases.split(",") if phase.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; choose from {PHASES}")
    return args


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def receiver_settings(args: argparse.Namespace) -> perf_receiver.ReceiverSettings:
    return perf_receiver.ReceiverSettings(
        seconds=args.seconds,
        warmup=args.warmup,
        rounds=args.rounds,
        connections=args.connections,
        threads=args.wrk_threads,
        distinct_events=args.distinct_events,
        latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds,
        pacer_connections=args.pacer_connections,
    )


def run_phases(stack: PerfStack, args: argparse.Namespace, table: Table) -> None:
    from bench.perf import payments as perf_payments
    from bench.perf import soak as perf_soak

    if "receiver" in args.phases:
        cfg = receiver_settings(args)
        log(f"receiver throughput: wrk, {cfg.rounds} round(s) of ours and bare")
        runs = perf_receiver.throughput(stack, cfg)
        log(f"receiver latency: {cfg.latency_rate:g}/s open loop, ours and bare")
        receiver_rows(table, cfg, runs, perf_receiver.latency(stack, cfg))
    if "pipeline" in args.phases:
        log(f"pipeline drain: {args.events} events, ours")
        ours = perf_pipeline.drain(stack, "ours", args.events, args.drain_timeout)
        log(f"pipeline drain: {args.events} events, naive ({ours.per_second:.0f}/s for ours)")
        naive = perf_pipeline.drain(stack, "naive", args.events, args.drain_timeout)
        log(f"pipeline latency: {args.pipeline_rate:g}/s for {args.pipeline_seconds:g} s")
        steady = perf_pipeline.pipeline_latency(stack, args.pipeline_rate, args.pipeline_seconds)
        pipeline_rows(table, ours, naive, steady, args.pipeline_rate)
    if "payments" in args.phases:
        log(f"create-payment: {args.create_calls} calls each, ours and the direct SDK")
        payment_rows(table, perf_payments.create_payment(stack, args.create_calls))
    if args.soak > 0:
        log(f"soak: {args.soak:g} s at {args.soak_rate:g}/s")
        soak_rows(table, perf_soak.soak(stack, args.soak, args.soak_rate), args.soak_rate)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    perf_receiver.require_wrk()
    # CI's timeout or Ctrl-C from make: the finally below still stops what this run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    table = Table(load_before=perf_report.load_average())
    stack = PerfStack(args.pg_server)
    try:
        log(f"own Redis :{stack.redis_port}, database {stack.db_name}, stand-in, web, bare")
        stack.start()
        run_phases(stack, args, table)
    finally:
        log("stopping what this run started; dropping its database")
        stack.stop()
    report = table.render(perf_report.load_average())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
