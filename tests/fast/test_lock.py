"""The locks are closed: every requirement of every locked package, as the installed environment
declares it (markers evaluated, requested extras included), names a package in the lock.

An install with --no-deps trusts exactly that. When it does not hold, an installer that resolves
goes to the index for the missing package and takes whatever is newest there that day (pytest-cov's
`coverage[toml]` did, on pip 23.2.1); one that does not resolve leaves it out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, distribution

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.locks import locked

PROJECT = "stripe-payments-service"

Requires = Callable[[str], list[str]]


def installed_requires(name: str) -> list[str]:
    return distribution(name).requires or []


def unlocked_requirements(
    lock: dict[str, str], roots: Iterable[tuple[str, frozenset[str]]], requires: Requires
) -> list[str]:
    """Each requirement reached from ``roots`` (a package and the extras asked of it) that
    names a package the lock does not hold, as "who: what"."""
    queue = deque(roots)
    seen: set[tuple[str, frozenset[str]]] = set()
    missing = []
    while queue:
        name, extras = queue.popleft()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for spec in requires(name):
            requirement = Requirement(spec)
            marker = requirement.marker
            if marker and not any(marker.evaluate({"extra": e}) for e in {"", *extras}):
                continue
            needed = canonicalize_name(requirement.name)
            if needed not in lock:
                missing.append(f"{name}: {spec}")
                continue
            queue.append((needed, frozenset(requirement.extras)))
    return sorted(missing)


@pytest.mark.parametrize(
    ("lock_file", "project_extras"),
    [("requirements-dev.lock", frozenset({"dev"})), ("requirements.lock", frozenset())],
)
def test_every_requirement_of_a_locked_package_is_locked(
    lock_file: str, project_extras: frozenset[str]
) -> None:
    lock = locked(lock_file)
    # What is read is the dev environment's metadata: it describes this lock's packages only
    # if they are pinned at the dev lock's versions.
    dev = locked("requirements-dev.lock")
    assert {name: dev.get(name) for name in lock} == lock
    roots = [(PROJECT, project_extras), *((name, frozenset()) for name in lock)]
    assert unlocked_requirements(lock, roots, installed_requires) == []


def test_the_metadata_read_is_the_locked_versions() -> None:
    """What the closure is checked against is what the lock pins, not some other release."""
    lock = locked("requirements-dev.lock")
    for name, version in lock.items():
        try:
            assert distribution(name).version == version, name
        except PackageNotFoundError:
            pytest.fail(f"{name}=={version} is locked but not installed")


def test_a_requirement_through_an_extra_outside_the_lock_is_found() -> None:
    """The shape that broke the install: pytest-cov asks for coverage[toml], and the extra
    brings a package of its own."""
    requires = {
        "pytest-cov": ["coverage[toml]>=7.10.6", "pluggy>=1.2"],
        "coverage": ['tomli; extra == "toml" and python_version < "99"', 'lxml; extra == "xml"'],
        "pluggy": [],
        "tomli": [],
    }
    lock = {"pytest-cov": "7.1.0", "coverage": "7.17.5", "pluggy": "1.6.0"}
    roots: list[tuple[str, frozenset[str]]] = [("pytest-cov", frozenset())]
    assert unlocked_requirements(lock, roots, requires.__getitem__) == [
        'coverage: tomli; extra == "toml" and python_version < "99"'
    ]
    assert unlocked_requirements({**lock, "tomli": "2.3.0"}, roots, requires.__getitem__) == []
    del lock["coverage"]
    assert unlocked_requirements(lock, roots, requires.__getitem__) == [
        "pytest-cov: coverage[toml]>=7.10.6"
    ]


def test_the_installer_is_the_dev_locks_own_pip() -> None:
    """.ci/install-lock installs .ci/installer.lock's pip first; the dev lock pins one too
    (pip-tools needs it): the two agree, or every make install would swap pip twice."""
    assert locked(".ci/installer.lock") == {"pip": locked("requirements-dev.lock")["pip"]}
