"""Fault-injection suite: thousands of events through the real path while things break.

Starts its own PostgreSQL cluster and Redis on spare ports (never the machine's shared ones) and
its own stack (gunicorn, a Celery worker, beat, the Stripe stand-in), drives payments and signed
Stripe-shaped events through the receiver, and meanwhile SIGKILLs the worker and its children,
SIGKILLs Redis (no persistence) and restarts it, and stops PostgreSQL for 20 s. Then it lets the
sweeper and the reconciler close the gaps, replays the poisoned handler's dead letters once the
poison is gone, and prints the table. Exit status 1 unless nothing was lost or applied twice.

    make chaos                        # the full run
    python -m bench.chaos --pairs 300 --payments 80   # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import requests
import stripe
from sqlalchemy import create_engine, text

from bench.chaos_handlers import POISON_EVENT, TABLES
from shared.config import load_settings
from shared.db import upgrade
from shared.dev import stripe_events
from shared.dev.processes import (
    Process,
    celery_worker_args,
    free_port,
    port_open,
    redis_server_args,
    venv_script,
    wait_until,
)
from shared.dev.standin import StandIn
from shared.infra.stripe_gateway import make_stripe_client
from shared.ledger.handlers import load_handler_modules, registry
from shared.ledger.reconcile import StripeEventSource

REPO_ROOT = Path(__file__).resolve().parents[1]
WEBHOOK_SECRET = "whsec_chaos_" + "c" * 24
PG_BIN = Path("/usr/lib/postgresql")


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


CHAOS_API_CLIENT_KEY = "chaos-only-api-client-key-" + "c" * 16


class OwnPostgres:
    """A throwaway PostgreSQL cluster in a temporary directory, on a spare port."""

    def __init__(self, workdir: Path) -> None:
        versions = sorted(PG_BIN.iterdir(), key=lambda p: p.name)
        self.bin = versions[-1] / "bin"
        self.data = workdir / "pgdata"
        self.data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(workdir, "postgres")
            shutil.chown(self.data, "postgres")
        self.port = free_port()
        subprocess.run(
            _as_postgres(
                [str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres"]
            ),
            check=True,
            capture_output=True,
        )
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/payments_chaos"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_postgres(
                [
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    options,
                    "-l",
                    str(self.data / "server.log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(
                [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            ),
            check=False,
            capture_output=True,
        )


class OwnRedis:
    """A Redis with no persistence on a spare port: SIGKILL loses everything it held."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: Process | None = None

    def start(self) -> None:
        self.proc = Process(
            "chaos-redis",
            redis_server_args(self.port),
            dict(os.environ),
        )
        wait_until(lambda: port_open(self.port), 10, "redis start")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.proc.pid, signal.SIGKILL)
        self.proc.proc.wait(10)


@dataclass
class Ledger:
    """What the load generator did, from its side."""

    accepted: set[str] = field(default_factory=set)
    deliveries_2xx: int = 0
    deliveries_refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted_log: Any = None

    def record(self, event_id: str, status: int) -> None:
        with self.lock:
            if 200 <= status < 300:
                self.deliveries_2xx += 1
                if event_id not in self.accepted:
                    self.accepted.add(event_id)
                    self.accepted_log.write(event_id + "\n")
                    self.accepted_log.flush()
            else:
                self.deliveries_refused += 1


class Stack:
    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.postgres = OwnPostgres(workdir)
        self.redis = OwnRedis()
        self.standin_port = free_port()
        self.web_port = free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "STRIPE_SECRET_KEY": "sk_test_chaos_" + "k" * 20,
            "STRIPE_PUBLISHABLE_KEY": "pk_test_chaos_" + "k" * 20,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": f"http://127.0.0.1:{self.standin_port}",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis.port}/0",
            "DATABASE_URL": self.postgres.url,
            "HANDLER_MODULES": "bench.chaos_handlers",
            # base64 of "chaos-only-key-not-a-secret-32b!"
            "PAYMENTS_ENCRYPTION_KEYS": "Y2hhb3Mtb25seS1rZXktbm90LWEtc2VjcmV0LTMyYiE=",
            "HANDLER_MAX_ATTEMPTS": "10",
            "HANDLER_MAX_PERMANENT_ATTEMPTS": "3",
            "RETRY_BASE_SECONDS": "1",
            # Runs held by a SIGKILLed worker wait for their lease to end; keep it short here.
            "HANDLER_TIME_LIMIT_SECONDS": "15",
            "SWEEP_INTERVAL_SECONDS": str(args.sweep_interval),
            "SWEEP_PENDING_SECONDS": str(args.sweep_after),
            "RECONCILE_INTERVAL_SECONDS": str(args.reconcile_interval),
            "RECONCILE_LOOKBACK_SECONDS": "7200",
            "LOG_LEVEL": "INFO",
            # The API client the chaos run creates payments as.
            "API_CLIENT_KEYS": f"chaos:{CHAOS_API_CLIENT_KEY}",
        }
        self.worker: Process | None = None
        self.others: list[Process] = []
        self.worker_starts = 0
        self.worker_crashes = 0
        self.worker_lock = threading.Lock()

    def start(self) -> None:
        self.postgres.start()
        self.redis.start()
        upgrade(load_settings(self.env).database_url)
        engine = create_engine(load_settings(self.env).database_url)
        with engine.begin() as conn:
            conn.exec_driver_sql(TABLES)
        engine.dispose()
        self.others.append(
            Process(
                "chaos-standin",
                [sys.executable, "-m", "bench.chaos_standin", "--port", str(self.standin_port)],
                self.env,
            )
        )
        self.others.append(
            Process(
                "chaos-web",
                [
                    venv_script("gunicorn"),
                    "--bind",
                    f"127.0.0.1:{self.web_port}",
                    "--workers",
                    "3",
                    "api.wsgi:app",
                ],
                self.env,
            )
        )
        self.others.append(
            Process(
                "chaos-beat",
                [
                    venv_script("celery"),
                    "-A",
                    "workers.celery_app",
                    "beat",
                    "--schedule",
                    str(self.workdir / "celerybeat-schedule"),
                ],
                self.env,
            )
        )
        self.start_worker()
        wait_until(lambda: port_open(self.standin_port), 20, "stand-in start")
        wait_until(lambda: port_open(self.web_port), 30, "web start")

    def start_worker(self) -> None:
        self.worker_starts += 1
        self.worker = Process(
            f"chaos-worker-{self.worker_starts}",
            celery_worker_args(f"chaos{self.worker_starts}@%h", concurrency=4),
            self.env,
        )

    def kill_and_restart_worker(self, down_seconds: float) -> None:
        # Under the lock: the supervisor must not take this death for a crash.
        with self.worker_lock:
            assert self.worker is not None
            # The main process and every prefork child, at once, with no chance to clean up.
            self.worker.kill_group()
            time.sleep(down_seconds)
            self.start_worker()

    def supervise_worker(self, stop: threading.Event) -> None:
        """Restart the worker when it exits on its own, as systemd or Docker would.

        Celery's worker can exit on a broker connection loss ("Unrecoverable error" from kombu
        while restoring unacked messages after Redis died); production runs it under a
        supervisor that restarts it, and so does this suite. Each restart is counted.
        """
        while not stop.wait(1):
            with self.worker_lock:
                if self.worker is not None and not self.worker.alive():
                    self.worker_crashes += 1
                    log(f"worker exited by itself (code {self.worker.proc.returncode}); restarting")
                    # Its prefork children can outlive it; they must not keep consuming.
                    self.worker.kill_group()
                    self.start_worker()

    def stop(self) -> None:
        for proc in [*self.others, *([self.worker] if self.worker else [])]:
            proc.stop()
        if self.redis.proc:
            self.redis.proc.stop()
        self.postgres.stop()


class LoadGenerator:
    def __init__(self, stack: Stack, ledger: Ledger, args: argparse.Namespace) -> None:
        self.stack = stack
        self.ledger = ledger
        self.args = args
        self.api = f"http://127.0.0.1:{stack.web_port}"
        self.standin = StandIn(load_settings(stack.env))
        self.retry_queue: list[tuple[float, dict[str, Any]]] = []
        self.retry_lock = threading.Lock()
        self.payment_ids: list[str] = []
        self.synthetic_intents: list[str] = []
        self.rng = random.Random(args.seed)

    def deliver(self, event: dict[str, Any]) -> None:
        """Sign and post one event as Stripe does; a refusal goes back for a later retry."""
        body = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)
        try:
            status = requests.post(
                f"{self.api}/webhook",
                data=body,
                headers={"Stripe-Signature": header, "Content-Type": "application/json"},
                timeout=10,
            ).status_code
        except requests.RequestException:
            status = 0
        self.ledger.record(event["id"], status)
        if not 200 <= status < 300:
            with self.retry_lock:
                self.retry_queue.append((time.monotonic() + 2, event))

    def inject(self, event_type: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
        response = requests.post(
            f"{self.stack.env['STRIPE_API_BASE']}/_config/chaos/events",
            json={"type": event_type, "object": obj, "created": created},
            timeout=10,
        )
        response.raise_for_status()
        event: dict[str, Any] = response.json()
        return event

    def real_payment(self, index: int) -> None:
        """A PaymentIntent created through our API and confirmed at the stand-in, whose
        webhook the stand-in posts to our receiver (and never retries)."""
        for _ in range(60):
            try:
                response = requests.post(
                    f"{self.api}/api/create-payment",
                    json={"amount": 1000 + index, "currency": "usd"},
                    headers={
                        "Idempotency-Key": f"chaos-{self.args.seed}-{index}",
                        "Authorization": f"Bearer {CHAOS_API_CLIENT_KEY}",
                    },
                    timeout=30,
                )
                if response.status_code == 200:
                    intent_id = response.json()["paymentIntentId"]
                    self.standin.pay(intent_id, "4242424242424242")
                    self.payment_ids.append(intent_id)
                    return
            except requests.RequestException:
                pass
            time.sleep(1)  # the database may be down: a client retries with the same key
        log(f"gave up creating payment {index}")

    def synthetic_pair(self, index: int) -> None:
        """processing then succeeded for one PaymentIntent, possibly swapped or duplicated."""
        intent_id = f"pi_chaos{self.args.seed}x{index:05d}"
        self.synthetic_intents.append(intent_id)
        now = int(time.time())
        # One pair in five shares its second: the tie rule decides (Stripe does not know these
        # PaymentIntents, so the lifecycle rank does).
        tie_or_next = 0 if self.rng.random() < 0.2 else 1
        pair = [
            self.inject(
                f"payment_intent.{status}",
                stripe_events.payment_intent(
                    intent_id=intent_id, status=status, amount=500 + index, created=now
                ),
                created=now + offset,
            )
            for offset, status in ((0, "processing"), (tie_or_next, "succeeded"))
        ]
        if self.rng.random() < 0.10:
            pair.reverse()
        for event in pair:
            self.deliver(event)
            if self.rng.random() < 0.10:
                self.deliver(event)  # Stripe delivers at least once: sometimes twice

    def poison_event(self, index: int) -> None:
        event = self.inject(
            POISON_EVENT, {"id": f"obj_poison{index}", "object": "chaos"}, int(time.time())
        )
        self.deliver(event)

    def drain_retries(self, until: float) -> None:
        while time.monotonic() < until:
            with self.retry_lock:
                due = [e for t, e in self.retry_queue if t <= time.monotonic()]
                self.retry_queue = [(t, e) for t, e in self.retry_queue if t > time.monotonic()]
                pending = len(self.retry_queue)
            for event in due:
                self.deliver(event)
            if not due and not pending:
                return
            time.sleep(0.5)

    def run(self, duration: float) -> None:
        jobs: list[Callable[[], None]] = []
        jobs += [partial(self.real_payment, i) for i in range(self.args.payments)]
        jobs += [partial(self.synthetic_pair, i) for i in range(self.args.pairs)]
        jobs += [partial(self.poison_event, i) for i in range(self.args.poison)]
        self.rng.shuffle(jobs)
        interval = duration / len(jobs)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = []
            for n, job in enumerate(jobs):
                # Spread the load over the whole fault schedule.
                delay = started + n * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(job))
                if n % 200 == 0:
                    with self.retry_lock:
                        due = [e for t, e in self.retry_queue if t <= time.monotonic()]
                        self.retry_queue = [
                            (t, e) for t, e in self.retry_queue if t > time.monotonic()
                        ]
                    for event in due:
                        pool.submit(self.deliver, event)
            for future in futures:
                future.result()
        self.drain_retries(time.monotonic() + 120)


def faults(stack: Stack, duration: float, stop: threading.Event, record: list[str]) -> None:
    """The fault schedule, as fractions of the load's duration."""
    schedule: list[tuple[float, str]] = [
        (0.10, "kill-worker"),
        (0.25, "kill-redis"),
        (0.40, "kill-worker"),
        (0.50, "stop-postgres"),
        (0.80, "kill-worker"),
        (0.90, "kill-redis"),
    ]
    started = time.monotonic()
    for at, fault in schedule:
        while time.monotonic() < started + at * duration:
            if stop.wait(0.2):
                return
        if fault == "kill-worker":
            record.append(f"{time.monotonic() - started:5.1f}s SIGKILL worker and children")
            stack.kill_and_restart_worker(2)
        elif fault == "kill-redis":
            stack.redis.kill()
            record.append(f"{time.monotonic() - started:5.1f}s SIGKILL redis (no AOF)")
            time.sleep(3)
            stack.redis.start()
        elif fault == "stop-postgres":
            stack.postgres.stop()
            record.append(f"{time.monotonic() - started:5.1f}s stop postgres for 20s")
            time.sleep(20)
            stack.postgres.start()


@dataclass
class Tally:
    events_at_stripe: int
    expected_runs: int
    applied: int
    lost: int
    applied_twice: int
    dead_lettered: int
    poisoned_dead: int
    pending: int
    wrong_status: int


def tally(stack: Stack, load: LoadGenerator, poison_expected_applied: bool) -> Tally:
    settings = load_settings(stack.env)
    source = StripeEventSource(make_stripe_client(settings))
    events = list(source.events_since(0))
    expected: set[tuple[str, str]] = set()
    for event in events:
        for handler in registry.handlers_for(event["type"]):
            if handler.startswith("chaos.") and (
                poison_expected_applied or handler != "chaos.poisoned"
            ):
                expected.add((event["id"], handler))
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        effects = {
            tuple(row) for row in conn.execute(text("SELECT event_id, handler FROM chaos_effects"))
        }
        twice = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT 1 FROM chaos_execution_log "
                "GROUP BY event_id, handler HAVING count(*) > 1) doubled"
            )
        ).scalar_one()
        dead_by_handler: dict[str, int] = {
            row[0]: int(row[1])
            for row in conn.execute(
                text("SELECT handler, count(*) FROM handler_runs WHERE status = 'dead' GROUP BY 1")
            )
        }
        poisoned_dead = dead_by_handler.pop("chaos.poisoned", 0)
        dead = sum(dead_by_handler.values())
        pending = conn.execute(
            text("SELECT count(*) FROM handler_runs WHERE status = 'pending'")
        ).scalar_one()
        intents = load.payment_ids + load.synthetic_intents
        statuses: dict[str, str] = {
            row[0]: row[1]
            for row in conn.execute(
                text(
                    "SELECT payment_intent_id, status FROM payments "
                    "WHERE payment_intent_id = ANY(:i)"
                ),
                {"i": intents},
            )
        }
    engine.dispose()
    wrong = sum(1 for intent in intents if statuses.get(intent) != "succeeded")
    return Tally(
        events_at_stripe=len(events),
        expected_runs=len(expected),
        applied=len(expected & effects),
        lost=len(expected - effects),
        applied_twice=int(twice),
        dead_lettered=int(dead),
        poisoned_dead=int(poisoned_dead),
        pending=int(pending),
        wrong_status=wrong,
    )


def wait_for_quiet(
    stack: Stack, load: LoadGenerator, timeout: float, *, poison_applied: bool
) -> Tally:
    deadline = time.monotonic() + timeout
    while True:
        current = tally(stack, load, poison_applied)
        quiet = current.lost == 0 and current.pending == 0 and current.wrong_status == 0
        if quiet or time.monotonic() > deadline:
            return current
        log(
            f"waiting: {current.lost} runs not applied, {current.pending} pending, "
            f"{current.wrong_status} payments not yet succeeded"
        )
        time.sleep(5)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--payments", type=int, default=200, help="PaymentIntents confirmed at the stand-in"
    )
    parser.add_argument(
        "--pairs", type=int, default=900, help="synthetic processing/succeeded pairs"
    )
    parser.add_argument("--poison", type=int, default=20, help="events for the poisoned handler")
    parser.add_argument("--duration", type=float, default=90, help="seconds the load lasts")
    parser.add_argument("--converge-timeout", type=float, default=300)
    parser.add_argument("--sweep-interval", type=int, default=5)
    parser.add_argument("--sweep-after", type=int, default=20)
    parser.add_argument("--reconcile-interval", type=int, default=15)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "test-artifacts" / "chaos")
    args = parser.parse_args()

    load_handler_modules(("bench.chaos_handlers",))
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="payments-chaos-"))
    stack = Stack(workdir, args)
    ledger = Ledger(accepted_log=(args.out / "accepted-event-ids.txt").open("w"))
    fault_log: list[str] = []
    supervisor_stop = threading.Event()
    # A SIGTERM (CI's timeout, Ctrl-C from make) still stops every process this suite started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        log(f"starting own PostgreSQL :{stack.postgres.port}, Redis :{stack.redis.port}, stack")
        stack.start()
        threading.Thread(
            target=stack.supervise_worker, args=(supervisor_stop,), daemon=True
        ).start()
        load = LoadGenerator(stack, ledger, args)
        load.standin.register_webhook(f"{load.api}/webhook")
        with _poison(stack):
            stop = threading.Event()
            chaos = threading.Thread(target=faults, args=(stack, args.duration, stop, fault_log))
            chaos.start()
            log(f"load: {args.payments} payments, {args.pairs} pairs, {args.poison} poison events")
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
        subprocess.run(
            [venv_script("payments"), "dlq", "replay", "--all", "--handler", "chaos.poisoned"],
            env=stack.env,
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )
        after = wait_for_quiet(stack, load, 120, poison_applied=True)
    finally:
        supervisor_stop.set()
        ledger.accepted_log.close()
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    rows = [
        ("events at Stripe (stand-in)", before.events_at_stripe),
        ("deliveries answered 2xx", ledger.deliveries_2xx),
        ("deliveries refused (retried)", ledger.deliveries_refused),
        ("accepted (distinct event ids)", len(ledger.accepted)),
        ("handler runs expected", after.expected_runs),
        ("applied", after.applied),
        ("lost", after.lost),
        ("applied twice", after.applied_twice),
        ("dead-lettered (not poisoned)", after.dead_lettered),
        ("poisoned runs dead-lettered", before.poisoned_dead),
        ("poisoned runs still dead after replay", after.poisoned_dead),
        ("payments not succeeded", after.wrong_status),
        ("seconds to converge", round(converged, 1)),
        ("worker exits restarted by the supervisor", stack.worker_crashes),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name.ljust(width)}  {value}" for name, value in rows))
    ok = (
        after.lost == 0
        and after.applied_twice == 0
        and after.dead_lettered == 0
        and after.poisoned_dead == 0
        and before.poisoned_dead == args.poison
        and after.wrong_status == 0
        and len(ledger.accepted) >= 1
    )
    print("chaos: PASS" if ok else "chaos: FAIL")
    return 0 if ok else 1


class _poison:
    """The poisoned handler fails while inside this block."""

    def __init__(self, stack: Stack) -> None:
        self.url = load_settings(stack.env).database_url

    def _set(self, on: bool) -> None:
        engine = create_engine(self.url)
        with engine.begin() as conn:
            if on:
                conn.execute(
                    text("INSERT INTO chaos_control VALUES ('poison') ON CONFLICT DO NOTHING")
                )
            else:
                conn.execute(text("DELETE FROM chaos_control WHERE name = 'poison'"))
        engine.dispose()

    def __enter__(self) -> None:
        self._set(True)

    def __exit__(self, *exc: object) -> None:
        self._set(False)


if __name__ == "__main__":
    sys.exit(main())
