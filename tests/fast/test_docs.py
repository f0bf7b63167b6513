"""docs/architecture.md names code that exists: every name it lists right after a file
("`path.py` `a`, `b`": a function, a class, a method, a constant) is defined in that file, so
the design cannot drift from the code unnoticed. And it names public entry points only, never a
private helper (`_name`), which a refactor may rename or inline without touching the design."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PATH = re.compile(r"`((?:api|workers|shared|cli|bench|tests)/[\w/]+\.py)`")
NAME = r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\(\))?`"
# A path, then the names it holds: `a`, `b`, `c` (a comma list right after it).
NAMES_AFTER = re.compile(r"\s*" + NAME + r"((?:\s*,\s*" + NAME + r")*)")
# Whatever the document puts in backticks, one span at a time.
SPAN = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


@cache
def defined_in(path: str) -> frozenset[str]:
    """Every name a module defines: top-level functions, classes and assignments, and the
    methods and attributes of its classes (as Class.name and as name)."""
    tree = ast.parse((ROOT / path).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            # Nested too: a view function lives inside its blueprint's factory.
            names |= _names_of(node)
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                names |= {f"{node.name}.{name}" for name in _names_of(member)}
    return frozenset(names)


def _names_of(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {t.id for t in node.targets if isinstance(t, ast.Name)}
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return {node.target.id}
    return set()


def named_in_doc() -> list[tuple[int, str, str]]:
    """(line, path, name) for every name listed right after a path: "`path.py` `a`, `b`"."""
    found = []
    for number, line in enumerate(DOC.read_text().splitlines(), start=1):
        for path in PATH.finditer(line):
            listed = NAMES_AFTER.match(line, path.end())
            if listed is None:
                continue
            for name in re.findall(NAME, listed.group(0)):
                found.append((number, path.group(1), name))
    return found


def test_every_name_the_architecture_gives_is_defined_where_it_says():
    named = named_in_doc()
    missing = [
        f"line {number}: {path} {name}"
        for number, path, name in named
        if not (ROOT / path).exists() or name not in defined_in(path)
    ]
    assert len(named) > 50  # the check reads the document it means to
    assert missing == []


def private_names_in(text: str) -> list[tuple[int, str]]:
    """(line, name) for every name or dotted name in backticks whose last part is private: it
    starts with an underscore and is not a dunder (`Task.__call__` is public protocol)."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for span in SPAN.findall(line):
            name = span.removesuffix("()")
            if not DOTTED.fullmatch(name):
                continue
            last = name.rsplit(".", 1)[-1]
            dunder = last.startswith("__") and last.endswith("__")
            if last.startswith("_") and not dunder:
                found.append((number, name))
    return found


def test_the_architecture_names_public_entry_points_not_private_helpers():
    private = [f"line {number}: {name}" for number, name in private_names_in(DOC.read_text())]
    # The check sees a private name when there is one, and lets a dunder be.
    assert private_names_in("`A.__call__` `A._claim()` `m._x` `_y`") == [
        (1, "A._claim"),
        (1, "m._x"),
        (1, "_y"),
    ]
    assert private == []
