"""`payments doctor` names each misconfiguration in plain words, run as a newcomer runs it: the
real CLI against the test database, the session's Redis and worker, the stand-in and our API."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from devtools import stripe_events
from devtools.processes import REPO_ROOT, ServedApp, free_port, run_payments
from shared.ledger.handlers.registry import HandlerRegistry
from tests.conftest import POSTGRES, QUIET_REDIS_DB, REDIS_HOST


def doctor(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = run_payments(
        "doctor",
        "--worker-timeout",
        "5",
        *args,
        # The test-only handler modules live in tests/support.
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT), **env},
    )
    return result.returncode, result.stdout + result.stderr


def line(output: str, status: str, check: str) -> str:
    """The finding's line, e.g. ``PROBLEM  database: ...``, with its fix if it has one."""
    lines = output.splitlines()
    for index, text_line in enumerate(lines):
        if text_line.startswith(f"{status:8} {check}:"):
            follow = lines[index + 1] if index + 1 < len(lines) else ""
            return text_line + ("\n" + follow if "fix:" in follow else "")
    raise AssertionError(f"no {status} {check} finding in:\n{output}")


@pytest.fixture
def good_env(base_env: dict[str, str], worker: Any, live_api: ServedApp) -> dict[str, str]:
    # The session's worker consumes base_env's Redis database; live_api is our web process.
    return dict(base_env)


def test_all_good(good_env: dict[str, str], live_api: ServedApp) -> None:
    code, output = doctor(good_env, "--web", live_api.url)
    assert code == 0, output
    assert output.rstrip().endswith("no problems found"), output
    for check in ("configuration", "key modes", "stripe key", "webhook secret", "database"):
        line(output, "OK", check)
    assert "consumed a canary from every queue" in line(output, "OK", "workers")
    assert "latest revision" in line(output, "OK", "migrations")
    # localstripe has no webhook endpoints API: said, not passed off as checked.
    assert "stand-in" in line(output, "SKIPPED", "webhook subscriptions")


def test_a_database_that_does_not_answer(good_env: dict[str, str]) -> None:
    env = {**good_env, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/payments"}
    code, output = doctor(env)
    assert code == 1
    found = line(output, "PROBLEM", "database")
    assert "cannot be used" in found and "start PostgreSQL or correct DATABASE_URL" in found
    line(output, "SKIPPED", "migrations")
    line(output, "SKIPPED", "workers")


@pytest.fixture
def empty_database() -> Iterator[str]:
    name = f"payments_doctor_{os.getpid()}"
    admin = create_engine(
        f"{POSTGRES}/postgres".replace("postgresql:", "postgresql+psycopg2:"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_an_unmigrated_database(good_env: dict[str, str], empty_database: str) -> None:
    code, output = doctor({**good_env, "DATABASE_URL": empty_database})
    assert code == 1
    line(output, "OK", "database")
    found = line(output, "PROBLEM", "migrations")
    assert "no migrations applied" in found and "payments db upgrade" in found


def test_a_redis_with_no_worker_consuming(good_env: dict[str, str], quiet_redis: Any) -> None:
    code, output = doctor({**good_env, "REDIS_URL": f"{REDIS_HOST}/{QUIET_REDIS_DB}"})
    assert code == 1
    line(output, "OK", "redis")
    found = line(output, "PROBLEM", "workers")
    assert "no worker is consuming" in found and "-Q events,handlers" in found


def test_a_redis_that_does_not_answer(good_env: dict[str, str]) -> None:
    code, output = doctor({**good_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert code == 1
    assert "does not answer" in line(output, "PROBLEM", "redis")
    line(output, "SKIPPED", "workers")


def test_a_publishable_key_as_the_secret_key(good_env: dict[str, str]) -> None:
    code, output = doctor({**good_env, "STRIPE_SECRET_KEY": "pk_test_" + "x" * 24})
    assert code == 1
    found = line(output, "PROBLEM", "configuration")
    assert "STRIPE_SECRET_KEY holds a publishable key" in found
    assert "copy the secret key (sk_test_... in test mode)" in found


def test_a_live_secret_key_with_a_test_publishable_key(good_env: dict[str, str]) -> None:
    code, output = doctor({**good_env, "STRIPE_SECRET_KEY": "sk_live_" + "x" * 24})
    assert code == 1
    found = line(output, "PROBLEM", "key modes")
    assert "STRIPE_SECRET_KEY is a live mode key but STRIPE_PUBLISHABLE_KEY a test" in found


def test_live_keys_against_the_test_stand_in(good_env: dict[str, str]) -> None:
    live = {"STRIPE_SECRET_KEY": "sk_live_" + "x" * 24, "STRIPE_PUBLISHABLE_KEY": "pk_live_" + "x"}
    code, output = doctor({**good_env, **live})
    assert code == 1
    assert "a live key is being sent to the local stand-in" in line(output, "PROBLEM", "key modes")


def test_a_key_stripe_refuses(good_env: dict[str, str]) -> None:
    # localstripe, like a Stripe account that never issued it, refuses this restricted key.
    code, output = doctor({**good_env, "STRIPE_SECRET_KEY": "rk_test_" + "x" * 24})
    assert code == 1
    assert "refused STRIPE_SECRET_KEY" in line(output, "PROBLEM", "stripe key")


def test_a_webhook_secret_our_web_process_does_not_use(
    good_env: dict[str, str], live_api: ServedApp
) -> None:
    env = {**good_env, "STRIPE_WEBHOOK_SECRET": "whsec_not_the_one_web_has_" + "q" * 16}
    code, output = doctor(env, "--web", live_api.url)
    assert code == 1
    found = line(output, "PROBLEM", "webhook secret")
    assert "does not accept signatures made with STRIPE_WEBHOOK_SECRET" in found
    assert "signature_invalid" in found


def test_no_web_process_answering(good_env: dict[str, str]) -> None:
    code, output = doctor(good_env, "--web", f"http://127.0.0.1:{free_port()}")
    assert code == 1
    assert "nothing answers at" in line(output, "PROBLEM", "webhook secret")


class StripeWebhookEndpoints:
    """Stripe's GET /v1/webhook_endpoints, serving Stripe's own example endpoint object
    (fixtures3.json): localstripe has no webhook endpoints API to provoke this against."""

    def __init__(self, enabled_events: list[str]) -> None:
        endpoint = stripe_events.resource("webhook_endpoint")
        endpoint.update(url="https://payments.example/webhook", enabled_events=enabled_events)
        self.endpoints = [endpoint]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        data = self.endpoints if path == "/v1/webhook_endpoints" else []
        body = json.dumps({"object": "list", "data": data, "has_more": False, "url": path})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]


def subscriptions_finding(base_env: dict[str, str], enabled_events: list[str]) -> str:
    served = ServedApp(StripeWebhookEndpoints(enabled_events))
    try:
        env = {**base_env, "STRIPE_API_BASE": served.url}
        env["HANDLER_MODULES"] += ",tests.support.newcomer_handlers"
        _, output = doctor(env, "--worker-timeout", "1")
    finally:
        served.stop()
    return output


def test_an_endpoint_not_subscribed_to_a_type_our_handlers_need(
    base_env: dict[str, str], database: Any
) -> None:
    output = subscriptions_finding(base_env, ["payment_intent.succeeded", "test.flaky"])
    found = line(output, "PROBLEM", "webhook subscriptions")
    # Derived from the registry: ours, the test worker's and a newly registered handler's types.
    for missing in ("payment_intent.payment_failed", "test.crash", "customer.created"):
        assert missing in found, found
    assert "payment_intent.succeeded," not in found and "test.flaky" not in found
    assert "https://payments.example/webhook is not subscribed to" in found


def test_an_endpoint_subscribed_to_everything_we_need(
    base_env: dict[str, str], database: Any
) -> None:
    output = subscriptions_finding(base_env, ["*"])
    assert "1 enabled endpoint(s)" in line(output, "OK", "webhook subscriptions")


def test_the_registry_lists_every_type_a_handler_needs() -> None:
    registry = HandlerRegistry()
    registry.handles("b.two", "a.one", name="first")(lambda session, event: None)
    registry.handles("a.one", "c.three", name="second")(lambda session, event: None)
    assert registry.event_types() == ["a.one", "b.two", "c.three"]
