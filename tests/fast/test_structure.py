"""The sizes a reader can hold, and the layering, checked on every run: no function over 60
lines in the product and its tools, no product code importing from tests/, no module named like
a standard-library one. A module over 300 lines is reported (a warning in the run's summary),
not refused: a module is split by concept, when one appears, not to meet a count."""

from __future__ import annotations

import ast
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("api", "workers", "shared", "cli", "devtools", "bench")
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60
# Literal documents, not logic: the OpenAPI description is one dictionary, and migrations are
# written once and never read as code again.
LITERAL_DOCUMENTS = {("api/openapi.py", "openapi_document")}
EXEMPT_DIRS = ("shared/migrations/versions",)


def _modules() -> Iterator[Path]:
    yield ROOT / "celeryconfig.py"
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if not relative.startswith(EXEMPT_DIRS):
                yield path


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


class LongModule(UserWarning):
    """A module past the lines a reader holds at once: worth a look for a second concept."""


def test_a_module_longer_than_a_reader_can_hold_is_reported():
    modules = list(_modules())
    long = {
        _name(path): lines
        for path in modules
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    for name, lines in sorted(long.items()):
        warnings.warn(f"{name} has {lines} lines (over {MAX_MODULE_LINES})", LongModule, 1)
    assert len(modules) > 100  # the walk found the product it reports on


def test_no_function_is_longer_than_a_screen():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_FUNCTION_LINES and (_name(path), node.name) not in LITERAL_DOCUMENTS:
                long[f"{_name(path)}:{node.name}"] = lines
    assert long == {}


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_no_product_code_imports_from_tests():
    leaks = {
        _name(path): module
        for path in _modules()
        for module in _imports(path)
        if module == "tests" or module.startswith("tests.")
    }
    assert leaks == {}


# The packages the ledger stands on: they must not reach back up into it.
BELOW_THE_LEDGER = ("shared/infra/", "shared/observability/", "shared/config/")


def test_nothing_below_the_ledger_imports_it():
    upward = {
        (_name(path), module)
        for path in _modules()
        if _name(path).startswith(BELOW_THE_LEDGER)
        for module in _imports(path)
        if module == "shared.ledger" or module.startswith("shared.ledger.")
    }
    assert upward == set()


def test_no_module_shadows_the_standard_library():
    shadows = [
        _name(path)
        for path in _modules()
        if path.stem in sys.stdlib_module_names and path.stem != "__init__"
    ]
    assert shadows == []


def test_the_ledger_applies_the_registry_it_is_given():
    """The ledger takes its handler registry as a parameter (the runtime passes its own, a test
    passes one of its making): the process-wide one appears only as a parameter's default, never
    looked up in a function body, so no path can run handlers the caller did not give it."""
    lookups = []
    for path, tree in _ledger_trees():
        if path.startswith("shared/ledger/handlers/"):
            continue
        defaults = {
            id(default)
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for default in node.args.defaults + node.args.kw_defaults
            if default is not None
        }
        lookups += [
            f"{path}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Name)
            and node.id in ("registry", "default_registry")
            and isinstance(node.ctx, ast.Load)
            and id(node) not in defaults
            and not _is_a_parameter(tree, node)
        ]
    assert lookups == []


def _is_a_parameter(tree: ast.Module, name: ast.Name) -> bool:
    """``registry`` read inside a function that takes it as a parameter."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = {a.arg for a in node.args.args + node.args.kwonlyargs}
            if name.id in params and any(inner is name for inner in ast.walk(node)):
                return True
    return False


def _ledger_trees() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted((ROOT / "shared" / "ledger").rglob("*.py")):
        yield str(path.relative_to(ROOT)), ast.parse(path.read_text())


def test_one_function_in_the_ledger_calls_a_handler():
    """Every path (first delivery, redelivery, a run as its own task) calls a handler through
    runs/apply.py's call_handler, so a run is applied the same way whichever path took it."""
    calls = [
        path
        for path, tree in _ledger_trees()
        for node in ast.walk(tree)
        # registry.get(name)(...): a handler looked up and called at once
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Call)
        and isinstance(node.func.func, ast.Attribute)
        and node.func.func.attr == "get"
        and isinstance(node.func.func.value, ast.Name)
        and node.func.func.value.id == "registry"
    ]
    assert calls == ["shared/ledger/runs/apply.py"]


def test_one_module_in_the_ledger_reports_what_a_run_came_to():
    """The run counters and the dead-letter alert are touched in runs/reporting.py alone, so a
    run's outcome is logged, counted and alerted the same way on every path."""
    reporters = {
        path
        for path, tree in _ledger_trees()
        for node in ast.walk(tree)
        if isinstance(node, ast.Name)
        and node.id in ("HANDLER_RUNS", "EVENT_PROCESSING", "report_dead_letter")
    }
    assert reporters == {"shared/ledger/runs/reporting.py"}


def test_the_dev_tools_find_the_repository_they_live_in():
    """Where the tests' processes start and write their logs: a wrong root starts them outside
    the tree, where nothing of the project can be imported."""
    from devtools.processes import REPO_ROOT

    assert REPO_ROOT == ROOT


# The ledger's rooms in the order an event walks through them; a room may use the rooms after
# it and the shared modules beside them (event_rules, event_rows, retry, statement_limits,
# handlers), never one before it.
LEDGER_ROOMS = ("recovery", "ingest", "runs")
LEDGER_SHARED = (
    "event_rules",
    "event_rows",
    "retry",
    "statement_limits",
    "handlers",
    "retention",
    "thin_events",
)


def _room(module: str) -> str:
    return module.split(".")[2] if module.count(".") >= 2 else module


def test_the_ledgers_rooms_never_call_back_up_the_journey():
    """An event's walk through the ledger never returns to a room it left: ingest uses runs,
    recovery uses both, and the shared modules use no room at all."""
    backwards = set()
    for path, tree in _ledger_trees():
        here = _room(".".join(Path(path).with_suffix("").parts))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and node.module):
                continue
            if not node.module.startswith("shared.ledger."):
                continue
            there = _room(node.module)
            if there == here or there in LEDGER_SHARED:
                continue
            allowed = here in LEDGER_ROOMS and there in LEDGER_ROOMS[LEDGER_ROOMS.index(here) :]
            if not allowed:
                backwards.add((path, node.module))
    assert backwards == set()
