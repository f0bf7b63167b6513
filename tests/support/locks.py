"""Reading the pip-compile locks the tests check."""

from __future__ import annotations

import re

from devtools.processes import REPO_ROOT


def locked(path: str) -> dict[str, str]:
    """name (canonical) -> version of every pin in a lock file (``path`` from the repository's
    root), checking each carries hashes."""
    text = (REPO_ROOT / path).read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = block.split(" ", 1)[0]
        if "==" not in head:
            continue
        name, version = head.split("==")
        assert "--hash=sha256:" in block, f"{name} has no hash in {path}"
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins
