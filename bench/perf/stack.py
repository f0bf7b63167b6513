"""What `make bench` runs against: its own Redis, database and stand-in, and the processes measured.

Redis is a redis-server of its own on a spare port; the database is a new one with a unique
name on the machine's PostgreSQL (127.0.0.1:5432 by default), dropped at the end. Ours are the
Procfile's `web` and `worker` lines exactly (procfile_command), with the Procfile's
per-process variables moved to this run's directory and spare ports. Only the processes
started here are ever stopped, each by its own process group.
"""

from __future__ import annotations

import functools
import os
import secrets
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import cast

import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bench.perf import handlers as bench_handlers
from bench.perf import naive_pipeline
from devtools.processes import (
    REPO_ROOT,
    Process,
    free_port,
    port_open,
    procfile_command,
    redis_server_args,
    wait_until,
)
from shared.db import upgrade

WEBHOOK_SECRET = "whsec_bench_" + "b" * 24
API_CLIENT_KEY = "bench-only-api-client-key-" + "b" * 16
# base64 of "bench-only-key-not-a-secret-32b!": a valid Fernet key that protects nothing.
ENCRYPTION_KEY = "YmVuY2gtb25seS1rZXktbm90LWEtc2VjcmV0LTMyYiE="
DATA_TABLES = (
    "stripe_events, handler_runs, payments, bench_effects, bench_run_done, naive_runs, naive_events"
)


def procfile_env(name: str) -> dict[str, str]:
    """The `env VAR=value` assignments in front of a Procfile line."""
    line = next(
        line
        for line in (REPO_ROOT / "Procfile").read_text().splitlines()
        if line.startswith(f"{name}:")
    )
    args = shlex.split(line.split(":", 1)[1])
    assignments: dict[str, str] = {}
    if args and args[0] == "env":
        for arg in args[1:]:
            if "=" not in arg:
                break
            key, _, value = arg.partition("=")
            assignments[key] = value
    return assignments


class PerfStack:
    def __init__(self, pg_server: str) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="payments-bench-"))
        self.db_name = f"payments_bench_{os.getpid()}_{secrets.token_hex(3)}"
        # psycopg2, which we ship (SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3).
        url = make_url(pg_server).set(drivername="postgresql+psycopg2", database=self.db_name)
        self.database_url = url.render_as_string(hide_password=False)
        self.redis_port = free_port()
        self.standin_port = free_port()
        self.web_port = free_port()
        # The bare comparators (bench/perf/bare_receiver.py), by how they verify.
        self.bare_ports = {"bare": free_port(), "bare-verify": free_port()}
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "STRIPE_SECRET_KEY": "sk_test_bench_" + "k" * 20,
            "STRIPE_PUBLISHABLE_KEY": "pk_test_bench_" + "k" * 20,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": f"http://127.0.0.1:{self.standin_port}",
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "PAYMENTS_ENCRYPTION_KEYS": ENCRYPTION_KEY,
            "HANDLER_MODULES": "bench.perf.handlers",
            "API_CLIENT_KEYS": f"bench:{API_CLIENT_KEY}",
            # create-payment is measured 200 times in a row from one address; the limiter still
            # does its bookkeeping on every call, it just never says no.
            "RATE_LIMIT": "1000000 per minute",
            "LOG_LEVEL": "INFO",
        }
        for name in ("LOG_FORMAT", "SENTRY_DSN", "PROMETHEUS_MULTIPROC_DIR", "WORKER_METRICS_PORT"):
            self.env.pop(name, None)  # production defaults, whatever this shell has
        self.processes: dict[str, Process] = {}
        self.db_created = False

    def start(self) -> None:
        self._start("redis", redis_server_args(self.redis_port), dict(os.environ))
        wait_until(lambda: port_open(self.redis_port), 10, "redis-server start")
        self.db_created = True
        upgrade(self.database_url)
        with self.engine().begin() as conn:
            conn.exec_driver_sql(bench_handlers.TABLES)
            conn.exec_driver_sql(naive_pipeline.TABLES)
        standin = [sys.executable, "-m", "devtools.localstripe_server"]
        self._start("standin", [*standin, "--port", str(self.standin_port)], self.env)
        self.start_web()
        self.start_bare("bare", "construct_event")
        self.start_bare("bare-verify", "header")
        ports = {"stand-in": self.standin_port, "web": self.web_port, **self.bare_ports}
        for what, port in ports.items():
            wait_until(functools.partial(port_open, port), 60, f"{what} start")

    def process_env(self, procfile_name: str, tag: str) -> dict[str, str]:
        """Our env plus the Procfile line's own variables: paths moved into this run's
        directory (under ``tag``), ports replaced by spare ones."""
        own = self.workdir / tag
        own.mkdir(parents=True, exist_ok=True)
        # gunicorn puts its control socket in $XDG_RUNTIME_DIR (else one path in $HOME shared
        # by every gunicorn on the machine): each of ours gets its own, the command unchanged.
        env = {**self.env, "XDG_RUNTIME_DIR": str(own)}
        for key, value in procfile_env(procfile_name).items():
            if key.endswith("_PORT"):
                value = str(free_port())
            elif "/" in value and not value.startswith("/"):
                value = str(own / value)
            env[key] = value
        return env

    def start_web(self) -> None:
        args = procfile_command("web", self.web_port)
        self._start("web", args, self.process_env("web", "web"))

    def start_bare(self, name: str, verify: str) -> None:
        """The Procfile `web` line with bench.perf.bare_receiver as the app, nothing else
        changed."""
        args = procfile_command("web", self.bare_ports[name])
        if ":" not in args[-1]:
            raise SystemExit(f"the Procfile web line no longer ends with its app: {args[-1]}")
        args[-1] = "bench.perf.bare_receiver:app"
        env = {**self.process_env("web", name), "BARE_VERIFY": verify}
        self._start(name, args, env)

    def start_worker(self, kind: str) -> Process:
        """``ours``: the Procfile `worker` line. ``naive``: the same line and flags, with the
        naive pipeline's app and queues instead of ours."""
        args = procfile_command("worker", 0)
        if kind == "naive":
            args[args.index("-A") + 1] = "bench.perf.naive_pipeline"
            queues = f"{naive_pipeline.INGEST_QUEUE},{naive_pipeline.HANDLER_QUEUE}"
            args[args.index("-Q") + 1] = queues
            return self._start("worker-naive", args, dict(self.env))
        return self._start("worker", args, self.process_env("worker", "worker"))

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> Process:
        self.stop_process(name)
        self.processes[name] = Process(f"perf-{name}", args, env)
        return self.processes[name]

    def stop_process(self, name: str) -> None:
        proc = self.processes.pop(name, None)
        if proc is not None:
            proc.stop()

    @functools.cache  # noqa: B019  (one stack per run)
    def engine(self) -> Engine:
        return create_engine(self.database_url, pool_size=2)

    @functools.cache  # noqa: B019
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def queued(self) -> dict[bytes, int]:
        """Messages waiting in each Redis list, whatever the queues are called."""
        client = self.redis()
        lists = [key for key in client.scan_iter() if client.type(key) == b"list"]
        return {key: self.llen(key) for key in lists}

    def llen(self, key: bytes) -> int:
        return cast(int, self.redis().llen(key))

    def reset_data(self) -> None:
        """Empty the queues and every table the measurements write to."""
        self.redis().flushdb()
        with self.engine().begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {DATA_TABLES} CASCADE")

    def stop(self) -> None:
        for name in list(self.processes)[::-1]:
            if name != "redis":
                self.stop_process(name)
        self.stop_process("redis")
        try:
            if self.db_created:
                self.engine().dispose()
                self._drop_database()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _drop_database(self) -> None:
        admin_url = make_url(self.database_url).set(database="postgres")
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
        finally:
            admin.dispose()
