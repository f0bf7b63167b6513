"""A throwaway PostgreSQL cluster of our own, for the suites that stop and start their database
(chaos) or make it listen where the machine's does not (the multi-host test).

Its own module, apart from bench.chaos.stack: importing that one registers the chaos handlers in
the process's handler registry, which a test process must not get as a side effect.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from devtools.processes import free_port

PG_BIN = Path("/usr/lib/postgresql")


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


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
