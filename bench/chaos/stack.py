"""The stack the chaos suite runs: its own PostgreSQL, Redis, web, worker, beat and stand-in."""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine

from bench.chaos.brokers import OwnRedis, RabbitBroker, RedisBroker
from bench.chaos.handlers import TABLES
from bench.own_postgres import OwnPostgres
from devtools.processes import (
    Process,
    celery_worker_args,
    free_port,
    port_open,
    python_module,
    venv_script,
    wait_until,
)
from devtools.receivers import http_receiver
from shared.config import load_settings
from shared.db import upgrade

REPO_ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "whsec_chaos_" + "c" * 24


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


CHAOS_API_CLIENT_KEY = "chaos-only-api-client-key-" + "c" * 16


class Stack:
    """Everything the suite starts, and the worker it kills and restarts."""

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.postgres = OwnPostgres(workdir)
        self.redis = OwnRedis()
        self.broker = (
            RabbitBroker(workdir) if args.broker == "rabbitmq" else RedisBroker(self.redis)
        )
        self.standin_port = free_port()
        self.web_port = free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "STRIPE_SECRET_KEY": "sk_test_chaos_" + "k" * 20,
            "STRIPE_PUBLISHABLE_KEY": "pk_test_chaos_" + "k" * 20,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": f"http://127.0.0.1:{self.standin_port}",
            "REDIS_URL": self.redis.url,
            **self.broker.env(),
            "DATABASE_URL": self.postgres.url,
            "HANDLER_MODULES": "bench.chaos.handlers",
            # base64 of "chaos-only-key-not-a-secret-32b!"
            "PAYMENTS_ENCRYPTION_KEYS": "Y2hhb3Mtb25seS1rZXktbm90LWEtc2VjcmV0LTMyYiE=",
            "HANDLER_MAX_ATTEMPTS": "10",
            "HANDLER_MAX_PERMANENT_ATTEMPTS": "3",
            "RETRY_BASE_SECONDS": "1",
            # Runs held by a SIGKILLed worker wait for their lease to end; keep it short here.
            "HANDLER_TIME_LIMIT_SECONDS": "15",
            # An effect held by a SIGKILLed relay comes back after its lease (12 times this):
            # the endpoint is local and quick, so keep that short too.
            "EFFECTS_TIMEOUT_SECONDS": "2",
            "SWEEP_INTERVAL_SECONDS": str(args.sweep_interval),
            "SWEEP_PENDING_SECONDS": str(args.sweep_after),
            "RECONCILE_INTERVAL_SECONDS": str(args.reconcile_interval),
            "RECONCILE_LOOKBACK_SECONDS": "7200",
            "LOG_LEVEL": "INFO",
            # The API client the chaos run creates payments as.
            "API_CLIENT_KEYS": f"chaos:{CHAOS_API_CLIENT_KEY}",
        }
        # The endpoint every chaos handler's side effect is sent to (bench.chaos.effects).
        self.effects_endpoint = contextlib.ExitStack()
        url, self.effects_received = self.effects_endpoint.enter_context(http_receiver())
        self.env["CHAOS_EFFECTS_URL"] = f"{url}/notify"
        self.worker: Process | None = None
        self.others: list[Process] = []
        self.worker_starts = 0
        self.worker_crashes = 0
        self.worker_lock = threading.Lock()

    def start(self) -> None:
        self.postgres.start()
        self.redis.start()
        self.broker.start()
        upgrade(load_settings(self.env).database_url)
        engine = create_engine(load_settings(self.env).database_url)
        with engine.begin() as conn:
            conn.exec_driver_sql(TABLES)
        engine.dispose()
        self.others.append(
            Process(
                "chaos-standin",
                python_module("bench.chaos.standin", "--port", str(self.standin_port)),
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
            # The relay of side effects too: its kills come with the worker's.
            celery_worker_args(
                f"chaos{self.worker_starts}@%h", concurrency=4, queues="events,handlers,effects"
            ),
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
        self.broker.stop()
        self.redis.stop()
        self.postgres.stop()
        self.effects_endpoint.close()
