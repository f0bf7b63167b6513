"""Rate limits, client addresses behind proxies, security headers and content types."""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import replace

import pytest
import redis
import requests
from prometheus_client import REGISTRY

from api import create_app
from devtools import stripe_events
from devtools.processes import (
    Process,
    free_port,
    port_open,
    procfile_command,
    wait_until,
)
from tests.conftest import (
    ADMIN_TOKEN,
    API_CLIENT_KEY,
    METRICS_TOKEN,
    OLD_WEBHOOK_SECRET,
    REDIS_HOST,
    WEBHOOK_SECRET,
)

LIMIT_REDIS_DB = 11


@pytest.fixture
def limited_settings(settings, database):
    client = redis.Redis.from_url(f"{REDIS_HOST}/{LIMIT_REDIS_DB}")
    client.flushdb()
    yield replace(
        settings,
        rate_limit="3 per minute",
        status_rate_limit="3 per minute",
        rate_limit_storage_url=f"{REDIS_HOST}/{LIMIT_REDIS_DB}",
    )
    client.flushdb()


def test_creation_is_rate_limited_per_client_with_retry_after(limited_settings):
    client = create_app(limited_settings).test_client()

    statuses = [client.post("/api/create-payment", json={}).status_code for _ in range(4)]

    assert statuses == [401, 401, 401, 429]
    limited = client.post("/api/create-payment", json={})
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.get_json()["error"]["code"] == "too_many_requests"
    # Another client address has its own budget.
    other = client.post("/api/create-payment", json={}, environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert other.status_code == 401


def test_only_a_refusal_for_rate_says_when_to_retry(limited_settings):
    client = create_app(replace(limited_settings, rate_limit="2 per minute")).test_client()

    allowed = client.post("/api/create-payment", json={})
    client.post("/api/create-payment", json={})
    refused = client.post("/api/create-payment", json={})

    # An answer within the budget carries no Retry-After: a client that honours it on any
    # answer (the payment page does) would wait out the window for nothing.
    assert allowed.status_code == 401
    assert "Retry-After" not in allowed.headers
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_a_page_waiting_for_its_result_is_not_starved_by_creation(limited_settings):
    client = create_app(replace(limited_settings, status_rate_limit="5 per minute")).test_client()
    for _ in range(4):
        client.post("/api/create-payment", json={})

    reads = [client.get("/api/payments/pi_nope").status_code for _ in range(6)]

    # Creation's budget is spent; status reads have their own, and it is larger.
    assert reads == [404] * 5 + [429]


def test_probes_and_the_operator_api_are_rate_limited(limited_settings):
    client = create_app(
        replace(limited_settings, probe_rate_limit="2 per minute", admin_rate_limit="2 per minute")
    ).test_client()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    ready = [client.get("/readyz").status_code for _ in range(3)]
    dlq = [client.get("/admin/dlq", headers=admin).status_code for _ in range(3)]
    # A wrong token is counted too: guessing the token costs the same budget.
    guess = client.get("/admin/dlq", headers={"Authorization": "Bearer guess"})

    assert ready == [200, 200, 429]
    assert dlq == [200, 200, 429]
    assert guess.status_code == 429


def test_metrics_on_the_api_port_need_the_metrics_token(settings, database):
    client = create_app(settings).test_client()
    unauthenticated = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    off = create_app(replace(settings, metrics_token=None)).test_client()

    assert unauthenticated.status_code == wrong.status_code == 404
    assert scraped.status_code == 200
    assert b"webhook_events_total" in scraped.data
    assert (
        off.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 404
    )


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


def test_the_checkout_page_is_never_cached_and_its_policy_pins_base_and_forms(settings, database):
    """The page is one checkout session's: a cache must not hand one visitor's page to the
    next. Its policy allows no <base> (which would re-aim every relative URL, the API calls
    included) and no form posting anywhere but here."""
    app = create_app(settings)
    client = app.test_client()
    created = client.post(
        "/api/checkout-sessions",
        json={"amount": 1000, "currency": "usd"},
        headers={"Authorization": f"Bearer {API_CLIENT_KEY}"},
    ).get_json()
    page = client.get(f"/checkout/{created['id']}")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    policy = [p.strip() for p in page.headers["Content-Security-Policy"].split(";")]
    assert "base-uri 'none'" in policy
    assert "form-action 'self'" in policy
    # The hosts Stripe's security guide lists for Stripe.js.
    directives = {part.split()[0]: part.split()[1:] for part in policy if part}
    assert {"https://js.stripe.com", "https://*.js.stripe.com"} <= set(directives["script-src"])
    assert {"https://js.stripe.com", "https://hooks.stripe.com"} <= set(directives["frame-src"])
    assert "https://api.stripe.com" in directives["connect-src"]
    # Styles come from the page's own origin only: no inline style an injection could add.
    assert "style-src 'self'" in policy
    assert "'unsafe-inline'" not in page.headers["Content-Security-Policy"]


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
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {API_CLIENT_KEY}"

    form = client.post("/api/create-payment", data={"amount": "1000", "currency": "usd"})
    broken = client.post("/api/create-payment", data="{not json", content_type="application/json")

    assert form.status_code == 415
    assert form.get_json()["error"]["code"] == "unsupported_media_type"
    assert broken.status_code == 400
    assert broken.get_json()["error"]["code"] == "invalid_json"


def test_long_idempotency_key_is_rejected(settings, database):
    client = create_app(settings).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {API_CLIENT_KEY}"
    response = client.post(
        "/api/create-payment",
        json={"amount": 1000, "currency": "usd"},
        headers={"Idempotency-Key": "k" * 256},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "Idempotency-Key"


def _matches(index: str, endpoint: str | None = None) -> float:
    labels = {"secret_index": index, "endpoint": endpoint or index}
    value = REGISTRY.get_sample_value("webhook_signature_secret_matches_total", labels)
    return value or 0.0


def test_the_metric_names_the_endpoint_whose_secret_matched(quiet_settings, quiet_redis):
    named = replace(quiet_settings, stripe_webhook_endpoints=("v2025", "v2026"))
    client = create_app(named).test_client()
    before = _matches("1", "v2026")
    body, headers = stripe_events.signed(
        stripe_events.event("payment_intent.created", stripe_events.payment_intent()),
        OLD_WEBHOOK_SECRET,
    )
    assert client.post("/webhook", data=body, headers=headers).status_code == 200
    assert _matches("1", "v2026") == before + 1


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


@pytest.mark.alone
def test_slow_clients_cannot_stop_the_webhook_from_answering(gunicorn_web):
    """Slowloris: clients that open connections and send their request a byte at a time. With
    sync workers, two of them stopped every request, /webhook included."""
    port = int(gunicorn_web.rsplit(":", 1)[1])
    slow = []
    for index in range(64):
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        # Half stall in their headers, half in a body they promised and never finish.
        if index % 2:
            conn.sendall(b"POST /api/create-payment HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        else:
            conn.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n{")
        slow.append(conn)
    try:
        answered = []
        for _ in range(20):
            body, headers = stripe_events.signed(
                stripe_events.event("payment_intent.created", stripe_events.payment_intent()),
                WEBHOOK_SECRET,
            )
            started = time.perf_counter()
            response = requests.post(
                f"{gunicorn_web}/webhook", data=body, headers=headers, timeout=5
            )
            answered.append((response.status_code, time.perf_counter() - started))
            for conn in slow:
                conn.sendall(b"a")  # still alive, still slow
    finally:
        for conn in slow:
            conn.close()
    assert [status for status, _ in answered] == [200] * 20
    # A liveness bound, not a benchmark (bench/perf/slow_clients.py measures the p99).
    assert max(seconds for _, seconds in answered) < 2


def test_worker_metrics_off_loopback_answer_only_with_the_token(settings, database):
    from shared.worker_metrics import start_worker_metrics

    port = free_port()
    exposed = replace(
        settings,
        worker_metrics_host="0.0.0.0",  # noqa: S104 (what compose sets, to be scraped)
        worker_metrics_port=port,
    )
    server = start_worker_metrics(exposed)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        anonymous = requests.get(url, timeout=10)
        wrong = requests.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
        scraped = requests.get(
            url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
        )
    finally:
        server.shutdown()
        server.server_close()
    assert anonymous.status_code == wrong.status_code == 401
    assert scraped.status_code == 200
    assert "dead_letters" in scraped.text
