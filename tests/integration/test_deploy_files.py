"""The deploy files say what the README promises: alert rules that promtool accepts and that
fire when they should, a compose stack with healthchecks, a complete Procfile."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest
import yaml

from devtools.processes import REPO_ROOT
from shared.config import PUBLIC_DEV_VALUES
from tests.support import locks

OPS = REPO_ROOT / "shared" / "ops"
LONG_RUNNING = {
    "postgres", "redis", "ratelimit", "proxy", "web", "worker", "effects", "beat", "flower",
    "localstripe",
}  # fmt: skip


def promtool() -> str:
    found = shutil.which("promtool")
    # .ci/run installs Debian's prometheus package; without promtool these rules go untested.
    assert found, "promtool is missing: apt-get install prometheus (see .ci/run)"
    return found


def test_alert_rules_are_valid():
    result = subprocess.run(
        [promtool(), "check", "rules", str(OPS / "alerts.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every rule in the file was read: none lost to an indentation slip.
    written = (OPS / "alerts.yml").read_text().count("- alert: ")
    assert f"{written} rules found" in result.stdout


def test_alert_rules_fire_as_their_unit_tests_expect():
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yml"], cwd=OPS, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


def test_every_long_running_service_has_a_healthcheck():
    services = compose()["services"]
    assert set(services) >= LONG_RUNNING
    for name in LONG_RUNNING:
        assert services[name].get("healthcheck", {}).get("test"), name


def test_redis_persists_and_never_evicts():
    command = " ".join(compose()["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command


def test_rate_limit_counters_live_in_a_redis_of_their_own_that_evicts():
    """A flood of distinct client addresses is one counter each: kept in the broker's Redis
    (noeviction) it would fill it, and queued events would be refused."""
    services = compose()["services"]
    web = services["web"]["environment"]["RATE_LIMIT_STORAGE_URL"]
    command = services["ratelimit"]["command"]
    assert web.endswith("@ratelimit:6379/0")
    assert "--maxmemory" in command and command[command.index("--maxmemory") + 1] == "64mb"
    assert command[command.index("--maxmemory-policy") + 1] == "volatile-lru"
    assert services["web"]["depends_on"]["ratelimit"]["condition"] == "service_healthy"


def test_the_proxy_is_the_only_way_in_and_web_trusts_exactly_it():
    services = compose()["services"]
    proxy = services["proxy"]
    assert "ports" not in services["web"]
    assert services["web"]["environment"]["TRUSTED_PROXY_HOPS"] == "1"
    assert "./shared/ops/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert proxy["depends_on"]["web"]["condition"] == "service_healthy"


def test_only_web_holds_the_operators_tokens():
    services = compose()["services"]
    for name, service in services.items():
        environment = service.get("environment") or {}
        holds = {"ADMIN_TOKEN", "ADMIN_TOKENS"} & set(environment)
        assert holds == ({"ADMIN_TOKEN", "ADMIN_TOKENS"} if name == "web" else set()), name


def test_flower_needs_a_login_and_worker_metrics_a_token():
    services = compose()["services"]
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith(
        "${FLOWER_BASIC_AUTH:?"
    )
    assert "FLOWER_UNAUTHENTICATED_API" not in text
    worker = services["worker"]["environment"]
    assert worker["WORKER_METRICS_HOST"] == "0.0.0.0"  # noqa: S104 (the file's value)
    # Off loopback the worker's metrics need the token, and compose cannot start without it.
    assert worker["METRICS_TOKEN"].startswith("${METRICS_TOKEN:?")


def test_the_app_connects_as_its_own_role_and_only_migrate_as_the_owner():
    services = compose()["services"]
    for name in ("web", "worker", "beat", "flower"):
        assert services[name]["environment"]["DATABASE_URL"].startswith(
            "postgresql://payments_app:"
        ), name
    assert services["migrate"]["environment"]["DATABASE_URL"].startswith("postgresql://payments:")
    init = "./shared/ops/postgres/app-role.sh:/docker-entrypoint-initdb.d/10-app-role.sh:ro"
    assert init in services["postgres"]["volumes"]


def test_every_package_the_project_installs_is_copied_into_the_images():
    """The images install the project from what their builds COPY: a package left out (the
    payments command's cli/) would be missing from every container."""
    include = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    builds = {
        service["build"]["dockerfile_inline"]
        for service in compose()["services"].values()
        if "build" in service
    }
    assert packages and builds
    for dockerfile in builds:
        copied = set(re.findall(r"^\s*COPY (\w+) \1\s*$", dockerfile, flags=re.M))
        assert packages <= copied, packages - copied


def test_migrations_run_once_before_web_and_workers():
    services = compose()["services"]
    assert services["migrate"]["command"] == ["payments", "db", "upgrade"]
    for name in ("web", "worker", "beat", "flower"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
    assert "pgdata" in compose()["volumes"]


def test_docker_compose_config_accepts_the_file():
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run([docker, "compose", "version"], capture_output=True).returncode
    ):
        pytest.skip("no docker compose client on this machine (the structure is checked above)")
    result = subprocess.run(
        [docker, "compose", "config", "--quiet"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_procfile_has_every_process():
    names = {
        line.split(":", 1)[0]
        for line in (REPO_ROOT / "Procfile").read_text().splitlines()
        if line.strip()
    }
    assert names == {"web", "worker", "effects", "beat", "flower", "stripe"}


SECRETS = (
    "STRIPE_SECRET_KEY",
    "STRIPE_PUBLISHABLE_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "PAYMENTS_ENCRYPTION_KEYS",
    "REDIS_PASSWORD",
    "POSTGRES_PASSWORD",
    "APP_DB_PASSWORD",
    "METRICS_TOKEN",
    "FLOWER_BASIC_AUTH",
)


def test_compose_secrets_fail_closed_with_no_default():
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses, name
        # ${VAR:?message} only: no ${VAR:-default} or ${VAR-default} a forgotten variable falls to.
        assert all(use.startswith(":?") for use in uses), (name, uses)
    for value in PUBLIC_DEV_VALUES:
        assert value not in text


def test_the_app_image_has_no_dev_extra_and_the_stand_in_is_dev_only():
    services = compose()["services"]
    for name in ("web", "worker", "beat", "flower", "migrate"):
        dockerfile = services[name]["build"]["dockerfile_inline"]
        assert "[dev]" not in dockerfile, name
        assert "profiles" not in services[name]
    for name in ("localstripe", "stripe-setup"):
        assert services[name]["profiles"] == ["dev"]


def test_redis_requires_a_password_everywhere():
    services = compose()["services"]
    assert "--requirepass" in services["redis"]["command"]
    assert services["redis"]["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    assert services["web"]["environment"]["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")


def _declared(extra: str | None) -> set[str]:
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    specs = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return {
        re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ]", s, maxsplit=1)[0]).lower() for s in specs
    }


def test_every_dependency_is_locked_with_hashes():
    runtime, dev = locks.locked("requirements.lock"), locks.locked("requirements-dev.lock")
    assert _declared(None) <= set(runtime)
    assert _declared(None) | _declared("dev") <= set(dev)
    # The image's runtime set is the dev set's subset, at the same versions.
    assert all(dev.get(name) == version for name, version in runtime.items())


def test_the_build_backend_is_locked_for_builds_without_isolation():
    """The image and make install build the project with --no-build-isolation: the backend they
    build it with must come from the lock (python:3.11's own setuptools is too old for
    pyproject's licence field, and an isolated build would fetch an unpinned one)."""
    import tomllib

    from packaging.requirements import Requirement

    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for path in ("requirements.lock", "requirements-dev.lock"):
        locked = locks.locked(path)
        for requirement in map(Requirement, requires):
            version = locked.get(requirement.name.lower())
            assert version, f"{requirement.name} is not in {path}"
            assert requirement.specifier.contains(version), (path, requirement, version)


def test_the_installed_environment_is_the_locked_one():
    from importlib.metadata import PackageNotFoundError, version

    mismatched = {}
    for name, locked in locks.locked("requirements-dev.lock").items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != locked:
            mismatched[name] = (locked, installed)
    assert not mismatched


def test_the_image_installs_the_lock_with_the_projects_install_step():
    """The one install step that never resolves (tests/integration/test_install.py), not a pip of
    its own."""
    services = compose()["services"]
    for service, lock in (("web", "requirements.lock"), ("localstripe", "requirements-dev.lock")):
        dockerfile = services[service]["build"]["dockerfile_inline"]
        assert "COPY .ci/install-lock .ci/installer.lock .ci/" in dockerfile
        assert f"RUN bash .ci/install-lock {lock} /opt/venv" in dockerfile
        assert "--require-hashes" not in dockerfile


def test_every_file_an_image_copies_exists():
    """A COPY of a file that is gone fails the build, and only the build: docker compose cannot
    run here, so the sources are checked against the tree (relative to each build's context)."""
    builds = {
        name: service["build"]
        for name, service in compose()["services"].items()
        if isinstance(service.get("build"), dict) and "dockerfile_inline" in service["build"]
    }
    assert {"web", "localstripe"} <= set(builds)
    missing = []
    for name, build in builds.items():
        context = REPO_ROOT / build["context"]
        for line in build["dockerfile_inline"].splitlines():
            words = [w for w in line.split() if not w.startswith("--")]
            if words[:1] != ["COPY"]:
                continue
            missing += [f"{name}: {src}" for src in words[1:-1] if not (context / src).exists()]
    assert missing == []


def test_the_rabbitmq_profile_is_a_three_node_cluster_the_app_can_use():
    services = compose()["services"]
    nodes = {name: services[name] for name in ("rabbitmq1", "rabbitmq2", "rabbitmq3")}
    config = (REPO_ROOT / "shared" / "ops" / "rabbitmq" / "rabbitmq.conf").read_text()
    for name, node in nodes.items():
        assert node["profiles"] == ["rabbitmq"] and node["hostname"] == name
        assert f"rabbit@{name}" in config
        mounts = node["volumes"]
        assert "./shared/ops/rabbitmq/rabbitmq.conf:/etc/rabbitmq/rabbitmq.conf:ro" in mounts
        assert f"{name}data:/var/lib/rabbitmq" in mounts
        assert "healthcheck" in node
    assert "classic_config" in config
    # Every app process takes the broker from BROKER_URL, and waits for the cluster when it runs.
    for name in ("web", "worker", "beat", "flower"):
        assert services[name]["environment"]["BROKER_URL"] == "${BROKER_URL:-}", name
        for node in nodes:
            assert services[name]["depends_on"][node]["required"] is False, (name, node)


def test_the_rabbitmq_nodes_refuse_to_start_without_their_secrets():
    """Compose reads a profile's variables even when it is off, so a ${VAR:?} there would stop
    every `docker compose up`: the node's own entrypoint refuses empty ones instead."""
    node = compose()["services"]["rabbitmq1"]
    assert node["environment"]["RABBITMQ_DEFAULT_PASS"] == "${RABBITMQ_PASSWORD:-}"
    assert node["environment"]["RABBITMQ_ERLANG_COOKIE"] == "${RABBITMQ_ERLANG_COOKIE:-}"
    check = node["entrypoint"][-1]
    shell = {
        "RABBITMQ_DEFAULT_PASS": "",
        "RABBITMQ_ERLANG_COOKIE": "cookie",
        "PATH": "/usr/bin:/bin",
    }
    # As the container runs it, with Compose's $$ turned into $ and the server not started.
    script = check.replace("$$", "$").replace("exec docker-entrypoint.sh rabbitmq-server", "true")
    refused = subprocess.run(["sh", "-c", script], env=shell, capture_output=True, text=True)
    assert refused.returncode == 1 and "set RABBITMQ_PASSWORD" in refused.stderr
    started = subprocess.run(
        ["sh", "-c", script], env={**shell, "RABBITMQ_DEFAULT_PASS": "pw"}, capture_output=True
    )
    assert started.returncode == 0
