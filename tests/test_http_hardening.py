"""Rate limits, client addresses behind proxies, security headers and content types."""

from __future__ import annotations

import os
import secrets
from dataclasses import replace

import pytest
import redis
import requests
from prometheus_client import REGISTRY

from api import create_app
from tests.conftest import OLD_WEBHOOK_SECRET, REDIS_HOST, WEBHOOK_SECRET
from tests.support import stripe_events
from tests.support.processes import (
    Process,
    free_port,
    port_open,
    procfile_command,
    wait_until,
)

LIMIT_REDIS_DB = 11


@pytest.fixture
def limited_settings(settings, database):
    client = redis.Redis.from_url(f"{REDIS_HOST}/{LIMIT_REDIS_DB}")
    client.flushdb()
    yield replace(
        settings,
        rate_limit="3 per minute",
        rate_limit_storage_url=f"{REDIS_HOST}/{LIMIT_REDIS_DB}",
    )
    client.flushdb()


def test_api_is_rate_limited_per_client_with_retry_after(limited_settings):
    client = create_app(limited_settings).test_client()

    statuses = [client.get("/api/payments/pi_nope").status_code for _ in range(4)]

    assert statuses == [404, 404, 404, 429]
    limited = client.get("/api/payments/pi_nope")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.get_json()["error"]["code"] == "too_many_requests"
    # One budget across every /api/ route: the limit is per client, not per route.
    other_route = client.post("/api/create-payment", json={"amount": 1000, "currency": "usd"})
    assert other_route.status_code == 429
    # Another client address has its own budget.
    other = client.get("/api/payments/pi_nope", environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert other.status_code == 404


def test_webhook_is_never_rate_limited(limited_settings, quiet_redis):
    client = create_app(replace(limited_settings, redis_url=f"{REDIS_HOST}/12")).test_client()
    statuses = []
    for _ in range(6):
        body, headers = stripe_events.signed(
            stripe_events.event("payment_intent.created", stripe_events.payment_intent()),
            WEBHOOK_SECRET,
        )
        statuses.append(client.post("/webhook", data=body, headers=headers).status_code)
    assert statuses == [200] * 6


def test_forwarded_address_counts_only_behind_a_trusted_proxy(limited_settings):
    spoofer = create_app(limited_settings).test_client()
    behind_proxy = create_app(replace(limited_settings, trusted_proxy_hops=1)).test_client()

    # With no trusted proxy, a client cannot dodge the limit by inventing X-Forwarded-For.
    spoofed = [
        spoofer.get("/api/payments/pi_x", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
        for i in range(4)
    ]
    assert spoofed[-1] == 429

    # Behind one proxy, the address it forwards is the client's: each has its own budget.
    forwarded = [
        behind_proxy.get(
            "/api/payments/pi_x",
            headers={"X-Forwarded-For": f"198.51.100.{i}"},
            environ_base={"REMOTE_ADDR": "10.0.0.2"},
        ).status_code
        for i in range(4)
    ]
    assert forwarded == [404] * 4


def test_security_headers_and_hsts_behind_tls(settings, database):
    plain = create_app(settings).test_client().get("/api/payments/pi_x")
    tls = (
        create_app(replace(settings, trusted_proxy_hops=1))
        .test_client()
        .get("/api/payments/pi_x", headers={"X-Forwarded-Proto": "https"})
    )

    assert plain.headers["X-Content-Type-Options"] == "nosniff"
    assert plain.headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in plain.headers
    assert tls.headers["Strict-Transport-Security"].startswith("max-age=")


@pytest.fixture
def gunicorn_web(base_env, database, quiet_redis):
    """The web process exactly as the Procfile starts it, on a free port, publishing to the
    Redis database no worker consumes."""
    port = free_port()
    env = {**os.environ, **base_env, "REDIS_URL": f"{REDIS_HOST}/12"}
    web = Process("gunicorn", procfile_command("web", port), env)
    try:
        wait_until(lambda: port_open(port), 30, "gunicorn start")
        yield f"http://127.0.0.1:{port}"
    finally:
        web.stop()


def test_server_banner_has_no_version(gunicorn_web):
    response = requests.get(f"{gunicorn_web}/healthz", timeout=10)

    server = response.headers.get("Server", "")
    assert response.status_code == 200
    assert not any(char.isdigit() for char in server), server
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_create_payment_takes_json_only(settings, database):
    client = create_app(settings).test_client()

    form = client.post("/api/create-payment", data={"amount": "1000", "currency": "usd"})
    broken = client.post("/api/create-payment", data="{not json", content_type="application/json")

    assert form.status_code == 415
    assert form.get_json()["error"]["code"] == "unsupported_media_type"
    assert broken.status_code == 400
    assert broken.get_json()["error"]["code"] == "invalid_json"


def test_long_idempotency_key_is_rejected(settings, database):
    client = create_app(settings).test_client()
    response = client.post(
        "/api/create-payment",
        json={"amount": 1000, "currency": "usd"},
        headers={"Idempotency-Key": "k" * 256},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "Idempotency-Key"


def _matches(index: str) -> float:
    value = REGISTRY.get_sample_value(
        "webhook_signature_secret_matches_total", {"secret_index": index}
    )
    return value or 0.0


def test_metric_tells_which_secret_matched(quiet_settings, quiet_redis):
    client = create_app(quiet_settings).test_client()
    before_new, before_old = _matches("0"), _matches("1")

    for secret in (WEBHOOK_SECRET, OLD_WEBHOOK_SECRET, OLD_WEBHOOK_SECRET):
        body, headers = stripe_events.signed(
            stripe_events.event("payment_intent.created", stripe_events.payment_intent()), secret
        )
        assert client.post("/webhook", data=body, headers=headers).status_code == 200

    assert _matches("0") - before_new == 1
    assert _matches("1") - before_old == 2


def test_chunked_oversized_body_is_refused(gunicorn_web, quiet_redis):
    # No Content-Length to check up front: the limit applies while the body streams in.
    def body():
        for _ in range(160):  # 10 MiB if it were all read
            yield b"x" * 65536

    _, headers = stripe_events.signed({"id": secrets.token_hex(4)}, WEBHOOK_SECRET)
    try:
        response = requests.post(
            f"{gunicorn_web}/webhook", data=body(), headers=headers, timeout=30
        )
        status = response.status_code
    except requests.ConnectionError:
        status = 413  # refused and closed before the client finished sending
    assert status == 413
    assert quiet_redis.llen("events") == 0
