"""Fault-injection suite: thousands of events through the real path while things break.

Starts its own PostgreSQL cluster and Redis on spare ports (never the machine's shared ones), with
``--broker rabbitmq`` its own three-node RabbitMQ cluster too, and its own stack (gunicorn, a
Celery worker, beat, the Stripe stand-in); drives payments and signed Stripe-shaped events through
the receiver, and meanwhile SIGKILLs the worker and its children, breaks the broker twice (SIGKILLs
Redis, which keeps nothing, or one RabbitMQ node at a time) and restarts it, and stops PostgreSQL
for 20 s. Then it lets the sweeper and the reconciler close the gaps, replays the poisoned
handler's dead letters once the poison is gone, and prints the table. Exit status 1 unless nothing
was lost or applied twice (and, on RabbitMQ, no delivery was refused: a quorum was always up).

    make chaos                        # the full run
    make chaos CHAOS_BROKER=rabbitmq  # the same on a RabbitMQ cluster
    python -m bench.chaos --pairs 300 --payments 80   # smaller
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.chaos.effects import EffectsTally, tally_effects, wait_for_effects
from bench.chaos.faults import Poison, faults
from bench.chaos.load import Ledger, LoadGenerator
from bench.chaos.stack import REPO_ROOT, Stack, log
from bench.chaos.verdict import Outcome, Tally, report, wait_for_quiet
from devtools.processes import venv_script
from shared.ledger.handlers import load_handler_modules


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument(
        "--payments", type=int, default=200, help="PaymentIntents confirmed at the stand-in"
    )
    parser.add_argument(
        "--pairs", type=int, default=900, help="synthetic processing/succeeded pairs"
    )
    parser.add_argument("--poison", type=int, default=20, help="events for the poisoned handler")
    parser.add_argument(
        "--disputes", type=int, default=60, help="paid payments that get a dispute and a refund"
    )
    parser.add_argument("--duration", type=float, default=90, help="seconds the load lasts")
    parser.add_argument(
        "--broker",
        choices=("redis", "rabbitmq"),
        default="redis",
        help="its own Redis, or its own three-node RabbitMQ cluster (quorum queues)",
    )
    parser.add_argument("--converge-timeout", type=float, default=300)
    parser.add_argument("--sweep-interval", type=int, default=5)
    parser.add_argument("--sweep-after", type=int, default=20)
    parser.add_argument("--reconcile-interval", type=int, default=15)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "test-artifacts" / "chaos")
    return parser.parse_args()


def load_under_faults(
    stack: Stack, ledger: Ledger, args: argparse.Namespace
) -> tuple[Tally, Tally, float, EffectsTally]:
    """Drive the load while the faults run, wait for convergence, then replay the poison.

    Returns the tallies before and after the replay, the seconds the gaps took to close, and
    the side effects' tally once the outbox has drained.
    """
    load = LoadGenerator(stack, ledger, args)
    load.standin.register_webhook(f"{load.api}/webhook")
    fault_log: list[str] = []
    with Poison(stack):
        stop = threading.Event()
        chaos = threading.Thread(target=faults, args=(stack, args.duration, stop, fault_log))
        chaos.start()
        log(
            f"load: {args.payments} payments, {args.pairs} pairs, {args.poison} poison events, "
            f"{args.disputes} disputes and refunds"
        )
        load.run(args.duration)
        stop.set()
        chaos.join()
        load_done = time.monotonic()
        for line in fault_log:
            log(f"fault at {line}")
        log("load done; waiting for the sweeper and the reconciler to close the gaps")
        before = wait_for_quiet(stack, load, args.converge_timeout, poison_applied=False)
        converged = time.monotonic() - load_done
    log(f"poison removed; replaying {before.poisoned_dead} dead letters of chaos.poisoned")
    poison_removed_at = time.monotonic()
    subprocess.run(
        [venv_script("payments"), "dlq", "replay", "--all", "--handler", "chaos.poisoned"],
        env=stack.env,
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    after = wait_for_quiet(stack, load, 120, poison_applied=True)
    wait_for_effects(stack, 120)
    return before, after, converged, tally_effects(stack, stack.effects_received, poison_removed_at)


def main() -> int:
    args = parse_args()
    load_handler_modules(("bench.chaos.handlers",))
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="payments-chaos-"))
    stack = Stack(workdir, args)
    ledger = Ledger(accepted_log=(args.out / "accepted-event-ids.txt").open("w"))
    supervisor_stop = threading.Event()
    # A SIGTERM (CI's timeout, Ctrl-C from make) still stops every process this suite started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        log(
            f"starting own PostgreSQL :{stack.postgres.port}, Redis :{stack.redis.port}, "
            f"broker {stack.broker.name}, stack"
        )
        stack.start()
        threading.Thread(
            target=stack.supervise_worker, args=(supervisor_stop,), daemon=True
        ).start()
        before, after, converged, effects = load_under_faults(stack, ledger, args)
    finally:
        supervisor_stop.set()
        ledger.accepted_log.close()
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return report(
        Outcome(before, after, ledger, converged, stack.worker_crashes, stack.broker.name, effects),
        args.poison,
    )


if __name__ == "__main__":
    sys.exit(main())
