"""The project's install step (.ci/install-lock, what make install, CI and the image run) holds
against releases upstream: it installs exactly the lock, with the installer the lock pins.

Run as a newcomer gets it: a fresh venv made by the machine's own python3 (with that Python's own
old pip), offline from a wheelhouse of our own that also holds newer releases of locked packages,
in the shape that broke the install: a locked package asks for another through an extra
(pytest-cov asks for coverage[toml]), and pip 23.2.1 took that as a requirement of its own and
picked the newest release, which the lock's hashes then refused.
"""

from __future__ import annotations

import base64
import ensurepip
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_LOCK = REPO_ROOT / ".ci" / "install-lock"
# The machine's own interpreter, not this venv's: its venv module seeds its own bundled pip.
MACHINE_PYTHON = Path(sys.base_prefix) / "bin" / "python3"
BUNDLED_PIP = next((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
# The pinned installer: the bundled pip under a version of its own, so the test can tell it was
# installed from the installer lock rather than left as the venv seeded it.
INSTALLER_VERSION = BUNDLED_PIP.name.split("-")[1] + ".post1"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_wheel(
    wheelhouse: Path,
    name: str,
    version: str,
    metadata: Sequence[str] = (),
    files: dict[str, bytes] | None = None,
    dist_files: dict[str, bytes] | None = None,
) -> Path:
    """A py3-none-any wheel of ``name`` at ``version``: its ``files``, and a dist-info whose
    METADATA carries the extra ``metadata`` lines (Requires-Dist, Provides-Extra)."""
    files = files if files is not None else {f"{name}/__init__.py": b""}
    info = f"{name}-{version}.dist-info"
    headers = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", *metadata]
    members = {
        **files,
        **{f"{info}/{path}": data for path, data in (dist_files or {}).items()},
        f"{info}/METADATA": ("\n".join(headers) + "\n").encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [_record_line(path, data) for path, data in members.items()]
    record.append(f"{info}/RECORD,,")
    wheel = wheelhouse / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in members.items():
            archive.writestr(path, data)
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def write_pip_wheel(wheelhouse: Path, version: str) -> Path:
    """The machine's bundled pip, repacked under ``version``."""
    with zipfile.ZipFile(BUNDLED_PIP) as bundled:
        names = bundled.namelist()
        files = {n: bundled.read(n) for n in names if ".dist-info/" not in n}
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        dist_files = {"entry_points.txt": bundled.read(entry_points)}
    metadata = ["Requires-Python: >=3.7"]
    return write_wheel(wheelhouse, "pip", version, metadata, files, dist_files)


def lock_entry(wheel: Path) -> str:
    """A pip-compile lock's entry for the one file ``wheel``."""
    name, version = wheel.name.split("-")[:2]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return f"{name}=={version} \\\n    --hash=sha256:{digest}\n    # via -r requirements.in\n"


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    """alpha asks for beta[toml], beta's extra brings gamma; each also released newer, with
    the same content under a higher version, which is all a resolver needs to be tempted."""
    house = tmp_path / "wheelhouse"
    house.mkdir()
    for version in ("1.0", "2.0"):
        write_wheel(house, "alpha", version, ["Requires-Dist: beta[toml]>=1.0"])
        extra = ["Provides-Extra: toml", 'Requires-Dist: gamma; extra == "toml"']
        write_wheel(house, "beta", version, extra)
        write_wheel(house, "gamma", version)
    write_pip_wheel(house, INSTALLER_VERSION)
    write_pip_wheel(house, "99.0")
    return house


def newcomer_env(wheelhouse: Path) -> dict[str, str]:
    """Offline, from the wheelhouse only, with none of this machine's pip settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    return {
        **env,
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "PIP_NO_CACHE_DIR": "1",
    }


def write_lock(tmp_path: Path, wheelhouse: Path, packages: list[str]) -> Path:
    lock = tmp_path / "requirements.lock"
    lock.write_text("".join(lock_entry(wheelhouse / f"{p}-1.0-py3-none-any.whl") for p in packages))
    return lock


def install(tmp_path: Path, wheelhouse: Path, packages: list[str]) -> tuple[Path, str]:
    """Run the project's install step for a lock of ``packages`` (at 1.0) into a new venv."""
    lock = write_lock(tmp_path, wheelhouse, packages)
    installer = tmp_path / "installer.lock"
    installer.write_text(lock_entry(wheelhouse / f"pip-{INSTALLER_VERSION}-py3-none-any.whl"))
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["bash", str(INSTALL_LOCK), str(lock), str(venv), str(MACHINE_PYTHON), str(installer)],
        env=newcomer_env(wheelhouse),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise AssertionError(output)
    return venv, output


def installed(venv: Path) -> dict[str, str]:
    script = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True, check=True
    )
    found: dict[str, str] = json.loads(out.stdout)
    return found


def test_the_install_step_installs_exactly_the_lock_with_newer_releases_on_the_index(
    tmp_path: Path, wheelhouse: Path
) -> None:
    venv, output = install(tmp_path, wheelhouse, ["alpha", "beta", "gamma"])
    found = installed(venv)
    assert {name: found.get(name) for name in ("alpha", "beta", "gamma", "pip")} == {
        "alpha": "1.0",
        "beta": "1.0",
        "gamma": "1.0",
        "pip": INSTALLER_VERSION,
    }
    assert "No broken requirements found." in output


def test_a_lock_that_misses_a_requirement_fails_the_install(
    tmp_path: Path, wheelhouse: Path
) -> None:
    """--no-deps installs what is locked and nothing more: a requirement the lock misses is
    not fetched (which would be resolving), it fails the install at pip check. (pip check
    does not follow extras: a lock missing what an extra brings, gamma here, is caught before
    it is committed, by tests/fast/test_lock.py.)"""
    with pytest.raises(AssertionError) as failed:
        install(tmp_path, wheelhouse, ["alpha", "gamma"])
    assert "alpha 1.0 requires beta, which is not installed." in str(failed.value)


def test_the_wheelhouse_breaks_a_resolving_install_of_the_same_lock(
    tmp_path: Path, wheelhouse: Path
) -> None:
    """The control: the machine's own pip, installing the same lock as the Makefile did before
    (`pip install --require-hashes -r`), is tempted past the lock and refused, as the newcomer
    was. Were it not, the test above would prove nothing about resolving."""
    lock = write_lock(tmp_path, wheelhouse, ["alpha", "beta", "gamma"])
    venv = tmp_path / "venv"
    subprocess.run([str(MACHINE_PYTHON), "-m", "venv", str(venv)], check=True, timeout=120)
    assert installed(venv)["pip"] == BUNDLED_PIP.name.split("-")[1]
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--require-hashes", "-r", str(lock)],
        env=newcomer_env(wheelhouse),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    refusal = "In --require-hashes mode, all requirements must have their versions pinned with =="
    assert refusal in done.stderr
    assert "beta[toml]>=1.0" in done.stderr


def test_make_install_runs_the_install_step_and_installs_nothing_else_with_deps(
    tmp_path: Path,
) -> None:
    """What make install would run (make -n prints the recipe, runs nothing): the install step
    above for the dev lock, and no pip install of its own that resolves."""
    venv = tmp_path / "venv"
    done = subprocess.run(
        ["make", "-n", "-B", f"{venv}/bin/.installed", f"VENV={venv}", "PYTHON=python3"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    commands = done.stdout.splitlines()
    assert f"bash .ci/install-lock requirements-dev.lock {venv} python3" in commands
    pip_installs = [line for line in commands if "pip install" in line]
    assert pip_installs
    assert all("--no-deps" in line for line in pip_installs), pip_installs
