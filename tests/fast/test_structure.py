"""The sizes a reader can hold, and the layering, checked on every run (issue 11): no module
over 300 lines and no function over 60 in the product and its tools, no product code importing
from tests/, no module named like a standard-library one."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("api", "workers", "shared", "bench")
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


def test_no_module_is_longer_than_a_reader_can_hold():
    long = {
        _name(path): lines
        for path in _modules()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


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


def test_no_module_shadows_the_standard_library():
    shadows = [
        _name(path)
        for path in _modules()
        if path.stem in sys.stdlib_module_names and path.stem != "__init__"
    ]
    assert shadows == []
