"""Metrics scraped from real processes, readiness, the worker liveness check, JSON logs,
Sentry reporting and Flower, after real flows."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
import requests
import sentry_sdk
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from api import create_app
from devtools import stripe_events
from devtools.processes import (
    ARTIFACTS,
    REPO_ROOT,
    Process,
    free_port,
    port_open,
    procfile_command,
    redis_server_args,
    run_payments,
    venv_script,
    wait_until,
)
from devtools.rabbitmq import RABBITMQ_BIN, OwnRabbitNode
from shared.observability.sentry import init_sentry
from tests.conftest import (
    API_CLIENT_KEY,
    METRICS_TOKEN,
    REDIS_HOST,
    WEBHOOK_SECRET,
    WORKER_METRICS_PORT,
)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    # The web process serves /metrics only to a scraper with the metrics token.
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    for family in text_string_to_metric_families(
        requests.get(url, headers=headers, timeout=10).text
    ):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def json_lines(log: str) -> list[dict[str, Any]]:
    """The JSON records of a log, leaving out a last line still being written."""
    return [json.loads(line) for line in log.split("\n")[:-1] if line.startswith("{")]


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def gunicorn_api(base_env, database, stand_in, live_api) -> Iterator[str]:
    """The web process as the Procfile runs it (2 gunicorn workers, multiprocess metrics),
    publishing to the real worker, with the stand-in's webhooks pointed at it."""
    port = free_port()
    metrics_dir = ARTIFACTS / f"prometheus-web-{os.getpid()}"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **base_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    web = Process("gunicorn-api", procfile_command("web", port), env)
    try:
        wait_until(lambda: port_open(port), 30, "gunicorn start")
        stand_in.register_webhook(f"http://127.0.0.1:{port}/webhook")
        yield f"http://127.0.0.1:{port}"
    finally:
        stand_in.register_webhook(f"{live_api.url}/webhook")
        web.stop()


def test_metrics_move_by_the_right_amounts_after_a_real_payment(gunicorn_api, stand_in, sessions):
    worker_metrics = f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics"
    web_before, worker_before = scrape(f"{gunicorn_api}/metrics"), scrape(worker_metrics)

    created = requests.post(
        f"{gunicorn_api}/api/create-payment",
        json={"amount": 4100, "currency": "usd"},
        headers={"Authorization": f"Bearer {API_CLIENT_KEY}"},
        timeout=30,
    ).json()
    stand_in.pay(created["paymentIntentId"], "4242424242424242")

    def succeeded() -> bool:
        view = requests.get(
            f"{gunicorn_api}/api/payments/{created['paymentIntentId']}",
            headers={"X-Client-Secret": created["clientSecret"]},
            timeout=10,
        )
        return view.json().get("status") == "succeeded"

    def moved(before, after, name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    def both_runs_counted() -> bool:
        now = scrape(worker_metrics)
        runs = {"handler": "payments.sync_payment_intent", "status": "done"}
        return moved(worker_before, now, "handler_runs_total", **runs) >= 2

    wait_until(succeeded, 30, "payment succeeded", interval=0.3)
    # Both events (created, succeeded) handled: the counts below are complete, not racing.
    wait_until(both_runs_counted, 30, "both handler runs counted", interval=0.3)
    web_after, worker_after = scrape(f"{gunicorn_api}/metrics"), scrape(worker_metrics)

    # Counted across both gunicorn workers: whichever served each request, nothing is lost.
    assert moved(web_before, web_after, "payment_attempts_total") == 1
    assert (
        moved(
            web_before,
            web_after,
            "webhook_events_total",
            type="payment_intent.succeeded",
            result="queued",
        )
        == 1
    )
    # Two deliveries: payment_intent.created and payment_intent.succeeded.
    assert moved(web_before, web_after, "webhook_latency_seconds_count") == 2
    assert moved(worker_before, worker_after, "payment_success_total") == 1
    assert (
        moved(
            worker_before,
            worker_after,
            "handler_runs_total",
            handler="payments.sync_payment_intent",
            status="done",
        )
        == 2  # one run per event: created and succeeded
    )
    assert moved(worker_before, worker_after, "event_processing_seconds_count") >= 1
    with sessions() as session:
        dead = session.execute(
            text("SELECT count(*) FROM handler_runs WHERE status = 'dead'")
        ).scalar_one()
    assert value(worker_after, "dead_letters") == dead
    assert ("queue_depth", (("queue", "events"),)) in worker_after
    assert ("queue_depth", (("queue", "handlers"),)) in worker_after


def test_api_logs_are_json_lines_with_request_and_event_ids(gunicorn_api):
    body, headers = stripe_events.signed(
        stripe_events.event("payment_intent.created", stripe_events.payment_intent()),
        WEBHOOK_SECRET,
    )
    response = requests.post(
        f"{gunicorn_api}/webhook",
        data=body,
        headers={**headers, "X-Request-Id": "req-from-proxy-1"},
        timeout=10,
    )
    assert response.headers["X-Request-Id"] == "req-from-proxy-1"
    event_id = json.loads(body)["id"]

    def read() -> list[dict[str, Any]]:
        return json_lines((ARTIFACTS / "gunicorn-api.log").read_text())

    def queued_line_written() -> bool:
        return any(
            line["logger"] == "api.webhook" and line["message"].startswith(f"webhook {event_id} ")
            for line in read()
        )

    # The request's last line, logged (and flushed) just before it answers: once it is in the
    # file, so is every line the request wrote.
    wait_until(queued_line_written, 10, "the webhook's 'queued' line written", interval=0.1)
    lines = read()
    ours = [line for line in lines if line.get("request_id") == "req-from-proxy-1"]
    assert ours, "no log line carries the request id"
    assert any(line.get("event_id") == event_id for line in ours)
    for line in lines:
        if line["logger"].startswith(("api", "shared")):
            assert "request_id" in line, line


def test_worker_logs_carry_task_and_event_ids(api, worker, settle):
    event = stripe_events.event(
        "payment_intent.processing", stripe_events.payment_intent(status="processing")
    )
    assert api.post_webhook(*stripe_events.signed(event, WEBHOOK_SECRET)).status_code == 200
    # And one whose first attempt fails inside its batch: the failure is reported there.
    flaky = stripe_events.event(
        "test.flaky", {"id": stripe_events.new_id("obj"), "object": "test", "fail_times": 1}
    )
    assert api.post_webhook(*stripe_events.signed(flaky, WEBHOOK_SECRET)).status_code == 200
    api.wait_for_status(event["data"]["object"]["id"], "processing")
    wait_until(
        lambda: f"run {flaky['id']}/tests.flaky failed" in worker.output(),
        30,
        "the flaky run's failure reported",
    )
    # Every task of this event has returned (a task is acknowledged only then), so every line
    # it logged is in the file.
    settle()

    records = json_lines(worker.output())
    ours = [r for r in records if r.get("event_id") == event["id"]]
    assert {r["logger"] for r in ours} >= {"workers.tasks"}
    assert all("task_id" in r for r in ours)
    assert any(r.get("payment_intent_id") == event["data"]["object"]["id"] for r in ours)
    for record in records:
        if record["logger"] in (
            "workers.tasks",
            "shared.ledger.runs.task",
            "shared.ledger.runs.reporting",
            "shared.payments",
        ):
            assert "task_id" in record, record


def test_readyz_names_the_broker_when_its_redis_dies(settings, database):
    port = free_port()
    own_redis = Process(
        "readyz-redis",
        redis_server_args(port),
        dict(os.environ),
    )
    try:
        wait_until(lambda: port_open(port), 10, "own redis start")
        client = create_app(
            replace(settings, redis_url=f"redis://127.0.0.1:{port}/0")
        ).test_client()
        # No worker consumes from this Redis: readiness says so too (test_worker_brokers.py).
        assert client.get("/readyz").get_json()["checks"]["broker"] is True

        os.kill(own_redis.proc.pid, signal.SIGKILL)
        own_redis.proc.wait(10)
        response = client.get("/readyz")
    finally:
        own_redis.stop()
    _names_the_dead_broker(client, response)


@pytest.mark.skipif(not RABBITMQ_BIN.exists(), reason="RabbitMQ is not installed")
def test_readyz_names_the_broker_when_its_rabbitmq_dies(settings, database, tmp_path):
    node = OwnRabbitNode(tmp_path)
    try:
        node.start()
        client = create_app(replace(settings, broker_url=node.url)).test_client()
        assert client.get("/readyz").get_json()["checks"]["broker"] is True

        node.kill()
        response = client.get("/readyz")
    finally:
        node.stop()
    _names_the_dead_broker(client, response)


def _names_the_dead_broker(client: Any, response: Any) -> None:
    """Not ready, for the broker alone; still alive."""
    assert response.status_code == 503
    assert "broker" in response.get_json()["failed"]
    assert response.get_json()["checks"]["database"] is True
    assert client.get("/healthz").status_code == 200


def test_readyz_names_the_database(settings):
    offline = replace(
        settings, database_url=f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x"
    )
    response = create_app(offline).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["failed"] == ["database"]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_payments(*args, env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)})


def test_worker_check_passes_with_a_consuming_worker(base_env, worker):
    result = run_cli(base_env, "worker-check", "--timeout", "15")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NOT consumed" not in result.stdout


def test_worker_check_catches_a_worker_that_answers_pings_but_consumes_nothing(base_env, database):
    # Its own Redis database, and a worker that consumes only one of the two queues: it answers
    # pings like the worker of celery#10205, yet the handlers queue is not being worked.
    env = {**base_env, "REDIS_URL": f"{REDIS_HOST}/10"}
    half = Process(
        "half-worker",
        [
            venv_script("celery"),
            "-A",
            "workers.celery_app",
            "worker",
            "-Q",
            "events",
            "--concurrency",
            "1",
            "--hostname",
            f"half-{os.getpid()}@%h",
        ],
        {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        wait_until(lambda: "ready" in half.output(), 60, "half worker start", interval=0.5)
        result = run_cli(env, "worker-check", "--timeout", "8")
    finally:
        half.stop()
    assert result.returncode == 1
    assert "half-" in result.stdout
    assert re.search(r"canary on handlers +NOT consumed", result.stdout)
    assert re.search(r"canary on events +consumed", result.stdout)


def test_dead_letter_reaches_sentry_with_tags(api, sessions, fake_sentry):
    with sessions.begin() as session:
        session.execute(
            text("INSERT INTO test_poison VALUES ('tests.poisoned') ON CONFLICT DO NOTHING")
        )
    try:
        event = stripe_events.event("test.poison", {"id": "obj_sentry", "object": "test"})
        assert api.post_webhook(*stripe_events.signed(event, WEBHOOK_SECRET)).status_code == 200

        def reported() -> bool:
            return any(
                e.get("tags", {}).get("handler") == "tests.poisoned"
                and e.get("tags", {}).get("event_type") == "test.poison"
                for e in fake_sentry.events()
            )

        wait_until(reported, 40, "dead letter reported to Sentry", interval=0.5)
    finally:
        with sessions.begin() as session:
            session.execute(text("DELETE FROM test_poison"))
    report = next(
        e for e in fake_sentry.events() if e.get("tags", {}).get("handler") == "tests.poisoned"
    )
    assert "sk_test_4eC39HqLyjWDarjtT1zdp7dc" not in json.dumps(report)


class Exploding:
    def create_payment_intent(self, **_):
        raise RuntimeError("a bug in the gateway")

    def retrieve_payment_intent(self, payment_intent_id):
        raise RuntimeError("a bug in the gateway")


@contextmanager
def web_sentry(settings, fake_sentry) -> Iterator[None]:
    """Sentry on, as the web process starts it, reporting to the local sink for the block;
    everything it captured is sent before the block ends."""
    init_sentry(replace(settings, sentry_dsn=fake_sentry.dsn), component="web")
    try:
        yield
        sentry_sdk.flush(5)
    finally:
        sentry_sdk.get_client().close()
        # Off again for the rest of the session, its Celery integration too: left enabled, it
        # adds tracing headers to every task the later tests publish.
        sentry_sdk.init(default_integrations=False, auto_enabling_integrations=False)


def test_unhandled_api_error_reaches_sentry(settings, database, fake_sentry):
    before = len(fake_sentry.events())
    with web_sentry(settings, fake_sentry):
        client = create_app(settings, gateway=Exploding()).test_client()
        response = client.post(
            "/api/create-payment",
            json={"amount": 1000, "currency": "usd"},
            headers={"Authorization": f"Bearer {API_CLIENT_KEY}"},
        )
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "internal_error"
    new = fake_sentry.events()[before:]
    assert any("a bug in the gateway" in json.dumps(e) for e in new)
    assert any(e.get("tags", {}).get("component") == "web" for e in new)


def test_credentials_in_request_headers_and_cookies_never_reach_sentry(
    settings, database, fake_sentry
):
    """An error while serving a request that carries every kind of credential we take: Sentry
    gets the event, and none of their values."""
    credentials = {
        "Authorization": f"Bearer {API_CLIENT_KEY}",
        "X-Checkout-Session": "cs-token-for-sentry-test-" + "t" * 24,
        "Idempotency-Key": "idem-key-for-sentry-test-" + "i" * 16,
        "X-Client-Secret": "pi_sentrytest_secret_" + "s" * 24,
        "Stripe-Signature": "t=1,v1=" + "f" * 64,
    }
    cookie = "cookie-value-for-sentry-test-" + "c" * 16
    before = len(fake_sentry.events())
    with web_sentry(settings, fake_sentry):
        client = create_app(settings, gateway=Exploding()).test_client()
        client.set_cookie("checkout_session", cookie)
        response = client.post(
            "/api/create-payment",
            json={"amount": 1000, "currency": "usd"},
            headers={**credentials, "X-Request-Id": "req-for-sentry-test"},
        )
    assert response.status_code == 500
    new = [e for e in fake_sentry.events()[before:] if "a bug in the gateway" in json.dumps(e)]
    assert new, "the error reached Sentry"
    sent = json.dumps(new)
    # The request is there (its id and content type are reported), its credentials are not.
    assert "req-for-sentry-test" in sent
    for name, value in credentials.items():
        assert value not in sent, name
    assert cookie not in sent


def test_flower_lists_the_worker_and_the_queues(base_env, worker):
    port = free_port()
    flower = Process(
        "flower",
        [*procfile_command("flower", port)[:-1], f"--port={port}"],
        {
            **os.environ,
            **base_env,
            "FLOWER_UNAUTHENTICATED_API": "true",
            "PYTHONPATH": str(REPO_ROOT),
        },
    )
    try:
        wait_until(lambda: port_open(port), 30, "flower start")

        def sees_worker() -> bool:
            workers = requests.get(
                f"http://127.0.0.1:{port}/api/workers?refresh=1", timeout=15
            ).json()
            return any(name.startswith(f"test-{os.getpid()}@") for name in workers)

        wait_until(sees_worker, 40, "flower sees the worker", interval=1)
        queues = requests.get(f"http://127.0.0.1:{port}/api/queues/length", timeout=15).json()
    finally:
        flower.stop()
    names = {queue["name"] for queue in queues["active_queues"]}
    assert {"events", "handlers"} <= names
