"""Starting and stopping the real processes the tests run against."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from shared.infra.topology import declare_dead_letters

REPO_ROOT = Path(__file__).resolve().parents[1]
# Logs of the processes started here. A test run of its own (make test's second run, beside the
# first) names its directory in TEST_ARTIFACTS, and each process of a parallel run (pytest-xdist
# names them gw0, gw1, ...) has one under it: two Celery workers' logs never share a file.
_RUN_ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
ARTIFACTS = _RUN_ARTIFACTS / os.environ.get("PYTEST_XDIST_WORKER", "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout}s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Process:
    """A child process with its output in a log file under test-artifacts/."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], cwd: Path = REPO_ROOT
    ) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = ARTIFACTS / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group, so stopping it also stops the children it forked.
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> None:
        # The leader first: a Celery worker or gunicorn stops its own children and lets them
        # finish (and save what they keep at exit, coverage data included); signalled
        # directly, a pool child can be killed mid-exit. Then the whole group, even when its
        # leader is gone: a Celery worker whose main process crashed leaves its prefork
        # children running.
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        self._signal_group(signal.SIGKILL)
        self.proc.wait(5)
        self._log.close()

    def kill_group(self) -> None:
        self._signal_group(signal.SIGKILL)
        self.proc.wait(5)

    def _signal_group(self, signum: int) -> None:
        # ProcessLookupError: the group is already gone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signum)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def venv_script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class ServedApp:
    """A WSGI app served on a real port in a thread, so the stand-in can post webhooks to it."""

    def __init__(self, app: object) -> None:
        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, app, threaded=True)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


def procfile_command(name: str, port: int) -> list[str]:
    """A Procfile line as arguments, bound to ``port``, the virtualenv's script first."""
    line = next(
        line
        for line in (REPO_ROOT / "Procfile").read_text().splitlines()
        if line.startswith(f"{name}:")
    )
    args = shlex.split(line.split(":", 1)[1].replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
    # The Procfile sets per-process variables with `env VAR=... command`.
    if args[0] == "env":
        args = args[1:]
        while "=" in args[0]:
            args = args[1:]
    args[0] = venv_script(args[0])
    return args


def redis_server_args(port: int) -> list[str]:
    """A throwaway Redis on 127.0.0.1:port that keeps nothing: SIGKILL loses all it held."""
    return [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxmemory-policy",
        "noeviction",
    ]


def celery_worker_args(
    hostname: str, *, concurrency: int, loglevel: str = "INFO", queues: str = "events,handlers"
) -> list[str]:
    """Our Celery worker on both queues, as the Procfile runs it (or on ``queues``)."""
    return [
        venv_script("celery"),
        "-A",
        "workers.celery_app",
        "worker",
        "-Q",
        queues,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--hostname",
        hostname,
    ]


def run_payments(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The operator CLI, run as an operator would, with exactly ``env`` as its environment."""
    return subprocess.run(
        [venv_script("payments"), *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def declare_worker_queues(producer: Any) -> None:
    """Declare every queue with its bindings, as a worker consuming both does on start."""
    with producer.connection_for_write() as connection:
        for queue in producer.amqp.queues.values():
            queue(connection.default_channel).declare()
    declare_dead_letters(producer)
