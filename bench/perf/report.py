"""The table `make bench` prints: Markdown rows with ratios, the notes behind them, the machine."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

from devtools.processes import REPO_ROOT

PRODUCT_PATHS = ("api", "workers", "shared", "Procfile", "celeryconfig.py", "pyproject.toml")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; inf when ``values`` is empty."""
    if not values:
        return math.inf
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    if math.isinf(seconds):
        return "n/a"
    millis = seconds * 1000
    return f"{millis:.1f}" if millis < 100 else f"{millis:,.0f}"


def rate(value: float) -> str:
    return f"{value:,.0f}"


def ratio(ours: float, other: float) -> str:
    return f"**{ours / other:.2f}**" if other and not math.isinf(other) else "n/a"


def machine_facts() -> list[str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return [
        f"nproc {os.cpu_count()}",
        f"CPU {model}",
        f"RAM {mem_kb / 1024 / 1024:.1f} GiB",
        f"Python {platform.python_version()}",
        f"kernel {platform.release()}",
    ]


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def code_under_test() -> str:
    """The commit measured, and whether product files differed from it (uncommitted edits)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            )
        except OSError:
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout)"
    changed = git("status", "--porcelain", "--", *PRODUCT_PATHS).splitlines()
    if not changed:
        return f"commit {commit}, product files as committed"
    return f"commit {commit} plus uncommitted changes to {len(changed)} product file(s)"


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
