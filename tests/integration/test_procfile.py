"""Each Procfile line starts by itself under a Procfile runner (honcho), from a clean copy of
the committed tree with nothing but an env file: no `make run` to create directories first."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import requests

from devtools.processes import (
    REPO_ROOT,
    Process,
    free_port,
    port_open,
    run_payments,
    wait_until,
)


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed tree (what a clone holds), unpacked where nothing else is."""
    target = tmp_path_factory.mktemp("clean-clone")
    if not (REPO_ROOT / ".git").exists():
        # Already an isolated copy of the committed tree (.ci/run): copy it, minus what runs
        # made (the virtualenv, caches, logs, .run).
        made = shutil.ignore_patterns(".venv", "*cache*", "test-artifacts", ".run", "__pycache__")
        shutil.copytree(REPO_ROOT, target, ignore=made, dirs_exist_ok=True)
        return target
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    assert not (target / ".run").exists()
    return target


def honcho(copy: Path, process: str, env: dict[str, str], web_port: int) -> Process:
    # Only the port changes (8000 may be taken on this machine); the line is otherwise as written.
    procfile = (copy / "Procfile").read_text().replace("127.0.0.1:8000", f"127.0.0.1:{web_port}")
    (copy / "Procfile.test").write_text(procfile)
    env_file = copy / f".env.{process}"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    bin_dir = str(Path(sys.executable).parent)
    return Process(
        f"honcho-{process}",
        [
            str(Path(bin_dir) / "honcho"),
            "-d",
            str(copy),
            "-f",
            "Procfile.test",
            "-e",
            str(env_file),
            "start",
            process,
        ],
        {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/root")},
        cwd=copy,
    )


@pytest.fixture
def procfile_env(base_env: dict[str, str], worker: Process) -> dict[str, str]:
    # A Redis database of its own: the session's worker must not take this one's canaries. No
    # test-only handler modules: the clean copy runs only what ships.
    env = {k: v for k, v in base_env.items() if k != "HANDLER_MODULES"}
    return {**env, "REDIS_URL": base_env["REDIS_URL"].rsplit("/", 1)[0] + "/9"}


def test_web_starts_by_itself_and_answers(clean_copy: Path, procfile_env, database):
    port = free_port()
    web = honcho(clean_copy, "web", procfile_env, port)
    try:
        wait_until(lambda: port_open(port) or not web.alive(), 60, "web start")
        assert web.alive(), web.output()
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        assert (clean_copy / ".run" / "metrics" / "web").is_dir()
    finally:
        web.stop()


def test_worker_and_beat_start_by_themselves_and_consume(
    clean_copy: Path, procfile_env, database
) -> None:
    worker = honcho(clean_copy, "worker", procfile_env, free_port())
    effects = honcho(clean_copy, "effects", procfile_env, free_port())
    beat = honcho(clean_copy, "beat", procfile_env, free_port())
    try:

        def consuming() -> bool:
            assert worker.alive(), worker.output()
            check = run_payments(
                "worker-check", "--timeout", "10", env={**os.environ, **procfile_env}
            )
            return check.returncode == 0

        wait_until(consuming, 90, "payments worker-check to pass", interval=2)
        wait_until(
            lambda: any((clean_copy / ".run").glob("celerybeat-schedule*")) or not beat.alive(),
            60,
            "beat to write its schedule",
        )
        assert beat.alive(), beat.output()
        # Beat's relay passes reach the effects worker, on its own queue.
        relayed = re.compile(r"Task payments\.relay_effects\[[0-9a-f-]+\] succeeded")
        wait_until(
            lambda: bool(relayed.search(effects.output())) or not effects.alive(),
            60,
            "the effects worker running beat's relay passes",
        )
        assert effects.alive(), effects.output()
    finally:
        beat.stop()
        effects.stop()
        worker.stop()
