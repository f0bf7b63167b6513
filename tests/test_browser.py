"""The checkout page in headless Chromium (Debian's), against our real API and worker and the
stand-in, with a Stripe.js test double (tests/support/stripe_js_double.js)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from api import create_app
from tests.support.processes import ARTIFACTS, ServedApp, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOUBLE = Path(__file__).parent / "support" / "stripe_js_double.js"
SHOTS = ARTIFACTS / "screenshots"


@pytest.fixture(scope="module")
def stripe_js_double(settings) -> Iterator[str]:
    """Serves the Stripe.js double, and relays its calls to the stand-in with the test key."""
    port = free_port()
    script = DOUBLE.read_text().replace("__PROXY__", f"http://127.0.0.1:{port}/proxy").encode()
    stand_in = settings.stripe_api_base or ""
    key = settings.stripe_secret_key

    class Handler(BaseHTTPRequestHandler):
        def reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self.reply(200, script, "application/javascript")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            upstream = requests.post(
                stand_in + self.path.removeprefix("/proxy"),
                data=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                auth=(key, ""),
                timeout=30,
            )
            self.reply(upstream.status_code, upstream.content, "application/json")

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}/v3/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def checkout(settings, stripe_js_double, stand_in, live_api) -> Iterator[str]:
    served = ServedApp(create_app(replace(settings, stripe_js_url=stripe_js_double)))
    stand_in.register_webhook(f"{served.url}/webhook")
    try:
        yield served.url
    finally:
        stand_in.register_webhook(f"{live_api.url}/webhook")
        served.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: apt-get install chromium (see .ci/run)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, checkout) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(checkout)
    yield page
    context.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def pay(page: Page, card: str, amount: str = "10.00") -> None:
    page.fill("#amount", amount)
    page.get_by_test_id("card-number").fill(card)
    page.click("#pay")


def test_card_4242_succeeds_with_the_status_the_webhook_set(page, checkout):
    pay(page, "4242 4242 4242 4242")

    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "succeeded", timeout=30_000)
    expect(status).to_contain_text("Payment succeeded")
    shot(page, "4242-succeeded")
    intent_id = status.get_attribute("data-payment-intent-id")
    assert intent_id
    # The page's final status is our ledger's, which only the webhook pipeline sets.
    assert (
        requests.get(f"{checkout}/api/payments/{intent_id}", timeout=10).json()["status"]
        == "succeeded"
    )
    expect(page.locator("#pay")).to_be_enabled()


def test_declined_card_says_so(page):
    pay(page, "4000000000000341")

    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "failed", timeout=30_000)
    expect(status).to_contain_text("declined")
    shot(page, "0341-declined")
    expect(page.locator("#pay")).to_be_enabled()


def test_three_d_secure_runs_its_challenge_then_succeeds(page):
    pay(page, "4000002500003155")

    page.get_by_test_id("3ds-complete").click(timeout=30_000)

    expect(page.locator("#status")).to_have_attribute("data-state", "succeeded", timeout=30_000)
    shot(page, "3155-succeeded")


def test_api_error_shows_a_message_and_re_enables_the_button(page):
    pay(page, "4242424242424242", amount="0.10")  # below Stripe's minimum for usd

    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "failed", timeout=15_000)
    expect(status).to_contain_text("at least 50")
    expect(page.locator("#pay")).to_be_enabled()
    shot(page, "api-error")


def test_button_is_disabled_while_a_payment_is_in_flight(page):
    pay(page, "4242424242424242")

    button = page.locator("#pay")
    expect(button).to_be_disabled(timeout=2_000)
    expect(button).to_have_attribute("aria-busy", "true")
    shot(page, "in-flight")
    expect(page.locator("#status")).to_have_attribute("data-state", "succeeded", timeout=30_000)
    expect(button).to_be_enabled()


def test_checkout_page_loads_stripe_js_from_its_setting(checkout, stripe_js_double):
    html = requests.get(checkout, timeout=10)
    assert f'src="{stripe_js_double}"' in html.text
    assert "script-src 'self' http://127.0.0.1" in html.headers["Content-Security-Policy"]
