"""The shipped proxy (issue 23, item 3): the repository's nginx config, run by Debian's nginx in
front of gunicorn started as the Procfile starts it, with TRUSTED_PROXY_HOPS=1 as compose sets
it. Two client addresses are two rate-limit buckets, https reaches the app as https, and slow
request bodies are held at the proxy, not in gunicorn's workers."""

from __future__ import annotations

import http.client
import os
import random
import shutil
import socket
import ssl
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from devtools import stripe_events
from devtools.processes import (
    REPO_ROOT,
    Process,
    free_port,
    port_open,
    procfile_command,
    wait_until,
)
from tests.conftest import REDIS_HOST, WEBHOOK_SECRET

NGINX_CONF = REPO_ROOT / "shared" / "ops" / "nginx" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@dataclass(frozen=True)
class Proxied:
    tls_port: int
    plain_port: int
    # The proxy's self-signed certificate, which the clients here trust and check.
    certificate: str

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.certificate)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"


def self_signed(directory: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(directory / "privkey.pem"), "-out", str(directory / "fullchain.pem")],
        check=True, capture_output=True,
    )  # fmt: skip


def proxy_config(root: Path, web_port: int, tls_port: int, plain_port: int) -> Path:
    """The repository's file, with only addresses and paths changed for this machine."""
    text = NGINX_CONF.read_text()
    replacements = {
        "server web:8000;": f"server 127.0.0.1:{web_port};",
        "listen 8443 ssl;": f"listen 127.0.0.1:{tls_port} ssl;",
        "listen 8080;": f"listen 127.0.0.1:{plain_port};",
        "/etc/nginx/certs/": f"{root}/",
        "/tmp/nginx": f"{root}/nginx",  # noqa: S108 (the file's paths, moved under root)
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    config = root / "nginx.conf"
    config.write_text(text)
    return config


@pytest.fixture(scope="module")
def proxied(base_env, database) -> Iterator[Proxied]:
    if not Path(NGINX).exists():
        pytest.fail("nginx is missing: apt-get install nginx (see .ci/run)")
    web_port, tls_port, plain_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        **base_env,
        # A Redis database no worker reads; the create budget small enough to reach.
        "REDIS_URL": f"{REDIS_HOST}/12",
        "TRUSTED_PROXY_HOPS": "1",
        "RATE_LIMIT": "3 per minute",
    }
    root = Path(tempfile.mkdtemp(prefix="payments-proxy-"))
    # nginx's workers run as nobody: they need to reach the temp paths under root.
    root.chmod(0o755)
    for name in ("client-body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / f"nginx-{name}").mkdir(mode=0o777)
        (root / f"nginx-{name}").chmod(0o777)
    self_signed(root)
    config = proxy_config(root, web_port, tls_port, plain_port)
    web = Process("proxied-gunicorn", procfile_command("web", web_port), env)
    proxy = Process("nginx", [NGINX, "-p", str(root), "-c", str(config), "-g", "daemon off;"], env)
    try:
        wait_until(lambda: port_open(web_port), 30, "gunicorn start")
        wait_until(lambda: port_open(tls_port), 30, "nginx start")
        yield Proxied(tls_port, plain_port, str(root / "fullchain.pem"))
    finally:
        proxy.stop()
        web.stop()
        shutil.rmtree(root, ignore_errors=True)


def from_address(
    proxied: Proxied, address: str, path: str, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    """A POST over TLS whose TCP connection comes from ``address`` (any 127.0.0.0/8)."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1",
        proxied.tls_port,
        source_address=(address, 0),
        context=proxied.tls(),
        timeout=10,
    )
    connection.request(
        "POST", path, body=b"{}", headers={"Content-Type": "application/json", **(headers or {})}
    )
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def loopback_address() -> str:
    # Fresh each run: the counters of a run a minute ago must not be this one's.
    return f"127.{random.randrange(1, 255)}.{random.randrange(0, 255)}.{random.randrange(1, 255)}"


def test_two_client_addresses_are_two_rate_limit_buckets(proxied):
    first, second = loopback_address(), loopback_address()

    statuses = [from_address(proxied, first, "/api/create-payment").status for _ in range(4)]
    # A client naming another address is not believed: nginx replaces the header.
    spoofed = from_address(proxied, first, "/api/create-payment", {"X-Forwarded-For": second})
    other = from_address(proxied, second, "/api/create-payment")

    assert statuses == [401, 401, 401, 429]
    assert spoofed.status == 429
    assert other.status == 401


def test_a_request_over_https_is_https_to_the_app(proxied):
    secure = requests.get(f"{proxied.url}/healthz", verify=proxied.certificate, timeout=10)
    plain = requests.get(
        f"http://127.0.0.1:{proxied.plain_port}/healthz", allow_redirects=False, timeout=10
    )

    assert secure.status_code == 200
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "Server" not in secure.headers or not any(c.isdigit() for c in secure.headers["Server"])
    assert plain.status_code == 301
    assert plain.headers["Location"].startswith("https://")


SLOW_BODIES = 2100


def slow_bodies(proxied: Proxied, count: int) -> list[ssl.SSLSocket]:
    """Clients that promise a 500 KB body and send it a byte at a time."""
    context = proxied.tls()
    held = []
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", proxied.tls_port), timeout=10)
        conn = context.wrap_socket(raw, server_hostname="127.0.0.1")
        conn.sendall(
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 500000\r\n\r\n{"
        )
        held.append(conn)
    return held


@pytest.mark.alone
def test_slow_request_bodies_stay_at_the_proxy(proxied):
    """2,100 sockets trickling a declared 500 KB body: straight at gunicorn they take every
    gevent worker's connection slots (2 x 1,000) and /healthz times out; behind the proxy,
    nginx holds them and the webhook still answers fast."""
    held = slow_bodies(proxied, SLOW_BODIES)
    session = requests.Session()
    latencies = []
    try:
        for index in range(200):
            body, headers = stripe_events.signed(
                stripe_events.event("payment_intent.created", stripe_events.payment_intent()),
                WEBHOOK_SECRET,
            )
            started = time.perf_counter()
            response = session.post(
                f"{proxied.url}/webhook",
                data=body,
                headers=headers,
                verify=proxied.certificate,
                timeout=10,
            )
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200
            if index % 50 == 0:
                for conn in held:
                    conn.sendall(b" ")  # still alive, still slow
    finally:
        for conn in held:
            conn.close()
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 0.1, f"p99 {p99 * 1000:.0f} ms"
