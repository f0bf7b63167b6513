"""The checkout page in headless Chromium (Debian's), against our real API and worker and the
stand-in, with a Stripe.js test double (devtools/stripe_js_double.js)."""

from __future__ import annotations

import re
import secrets
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

import devtools
from api import create_app
from devtools.processes import ARTIFACTS, ServedApp, free_port, wait_until
from tests.conftest import ADMIN_TOKEN, API_CLIENT_KEY, REDIS_HOST

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOUBLE = Path(devtools.__file__).parent / "stripe_js_double.js"
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
    # The demo page (the dev stand-in's): most tests type the amount in, as a developer does.
    demo = replace(settings, stripe_js_url=stripe_js_double, checkout_demo=True)
    served = ServedApp(create_app(demo))
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
        requests.get(
            f"{checkout}/admin/payments/{intent_id}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        ).json()["status"]
        == "succeeded"
    )
    # Paid: the order is done, and Pay is not offered again until a new payment is started.
    expect(page.locator("#pay")).to_be_disabled()
    page.click("#new-payment")
    expect(page.locator("#pay")).to_be_enabled()


def priced_by_the_back_end(checkout: str, amount: int) -> dict[str, Any]:
    response = requests.post(
        f"{checkout}/api/checkout-sessions",
        json={"amount": amount, "currency": "usd", "metadata": {"orderId": "ord-42"}},
        headers={"Authorization": f"Bearer {API_CLIENT_KEY}"},
        timeout=10,
    )
    assert response.status_code == 201
    session: dict[str, Any] = response.json()
    return session


def test_a_session_the_back_end_priced_is_paid_at_its_price(browser, checkout):
    session = priced_by_the_back_end(checkout, 7777)
    context = browser.new_context()
    page = context.new_page()
    page.goto(checkout + session["url"])

    expect(page.locator("#order-amount")).to_have_text("77.77 USD")
    assert page.locator("#amount").count() == 0
    # The token left the address bar (and history) once the page had it.
    assert "#" not in page.url
    page.get_by_test_id("card-number").fill("4242 4242 4242 4242")
    page.click("#pay")
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "succeeded", timeout=30_000)
    shot(page, "session-succeeded")
    intent_id = status.get_attribute("data-payment-intent-id")
    assert intent_id
    # A reload of the paid session says so, and offers nothing to pay.
    page.reload()
    expect(status).to_contain_text("already paid")
    assert page.locator("#pay").count() == 0
    context.close()
    view = ledger_of(checkout, intent_id)
    assert (view["amount"], view["status"]) == (7777, "succeeded")
    assert view["checkoutSession"] == session["id"]
    assert view["metadata"] == {"orderId": "ord-42"}


def test_a_page_that_asks_another_amount_of_a_session_is_refused(browser, checkout):
    session = priced_by_the_back_end(checkout, 8888)
    context = browser.new_context()
    page = context.new_page()
    page.goto(checkout + session["url"])

    status, body = page.evaluate(
        """async (token) => {
          const response = await fetch("/api/create-payment", {
            method: "POST",
            headers: { "Content-Type": "application/json", "X-Checkout-Session": token },
            body: JSON.stringify({ amount: 50, currency: "usd" }),
          });
          return [response.status, await response.json()];
        }""",
        session["token"],
    )
    context.close()

    assert status == 409
    assert (body["error"]["code"], body["error"]["field"]) == (
        "checkout_session_mismatch",
        "amount",
    )


def ledger_of(checkout: str, intent_id: str) -> dict[str, Any]:
    """The payment as our ledger has it (only the webhook pipeline moves it past creation)."""
    response = requests.get(
        f"{checkout}/admin/payments/{intent_id}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    view: dict[str, Any] = response.json()
    return view


def wait_for_ledger_decline(checkout: str, intent_id: str) -> dict[str, Any]:
    wait_until(
        lambda: ledger_of(checkout, intent_id).get("lastError") is not None,
        30,
        f"the decline of {intent_id} in our ledger",
        interval=0.2,
    )
    return ledger_of(checkout, intent_id)


@pytest.mark.parametrize(
    ("card", "words", "decline_code"),
    [
        ("4000 0000 0000 0002", "Your card was declined. Try another card.", "generic_decline"),
        ("4000 0000 0000 9995", "Your card has insufficient funds.", "insufficient_funds"),
        ("4000 0000 0000 0341", "Your card was declined. Try another card.", "generic_decline"),
    ],
)
def test_a_declined_card_says_why_and_our_ledger_records_the_decline(
    page, checkout, card, words, decline_code
):
    # Through the page, the Stripe.js double, the stand-in, its webhook, the worker: no event
    # built by hand (before the stand-in was taught Stripe's test mode, 0002 and 9995 paid).
    pay(page, card)

    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "failed", timeout=30_000)
    expect(status).to_contain_text(words)
    shot(page, f"{card[-4:]}-declined")
    expect(page.locator("#pay")).to_be_enabled()
    intent_id = status.get_attribute("data-payment-intent-id")
    assert intent_id
    view = wait_for_ledger_decline(checkout, intent_id)
    assert view["status"] == "requires_payment_method"
    assert view["lastError"]["code"] == "card_declined"
    assert view["lastError"]["declineCode"] == decline_code


def test_after_a_decline_another_card_pays_the_same_order(page, checkout):
    pay(page, "4000 0000 0000 0002")
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "failed", timeout=30_000)
    declined_id = status.get_attribute("data-payment-intent-id")
    assert declined_id

    pay(page, "4242 4242 4242 4242")

    expect(status).to_have_attribute("data-state", "succeeded", timeout=30_000)
    # The order's one idempotency key: the retry confirmed the same PaymentIntent.
    assert status.get_attribute("data-payment-intent-id") == declined_id
    view = ledger_of(checkout, declined_id)
    assert (view["status"], view["lastError"]) == ("succeeded", None)
    shot(page, "0002-then-4242-succeeded")


def test_three_d_secure_runs_its_challenge_then_succeeds(page, checkout):
    pay(page, "4000002500003155")

    page.get_by_test_id("3ds-complete").click(timeout=30_000)

    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "succeeded", timeout=30_000)
    shot(page, "3155-succeeded")
    intent_id = status.get_attribute("data-payment-intent-id")
    assert intent_id
    assert ledger_of(checkout, intent_id)["status"] == "succeeded"


def test_the_page_and_its_challenge_are_styled_with_no_inline_style_allowed(browser, checkout):
    """The page's policy allows styles from its own origin only: its stylesheet and the
    challenge's DOM-set styles apply, and nothing on the way trips the policy."""
    context = browser.new_context()
    page = context.new_page()
    page.add_init_script(
        "window.violations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " (e) => window.violations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    try:
        page.goto(checkout)
        background = "e => getComputedStyle(e).backgroundColor"
        assert page.locator("#pay").evaluate(background) == "rgb(99, 91, 255)"
        pay(page, "4000002500003155")
        challenge = page.locator("#three-d-secure > div")
        challenge.wait_for(timeout=30_000)
        assert challenge.evaluate(background) == "rgb(255, 255, 255)"
        page.get_by_test_id("3ds-complete").click()
        expect(page.locator("#status")).to_have_attribute("data-state", "succeeded", timeout=30_000)
        assert page.evaluate("window.violations") == []
    finally:
        context.close()


def test_failed_three_d_secure_says_so_and_our_ledger_records_it(page, checkout):
    pay(page, "4000002500003155")

    page.get_by_test_id("3ds-fail").click(timeout=30_000)

    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "failed", timeout=30_000)
    expect(status).to_contain_text("Authentication failed")
    intent_id = status.get_attribute("data-payment-intent-id")
    assert intent_id
    view = wait_for_ledger_decline(checkout, intent_id)
    assert view["lastError"]["code"] == "payment_intent_authentication_failure"


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
    expect(button).to_be_disabled()


def test_checkout_page_loads_stripe_js_from_its_setting(checkout, stripe_js_double):
    html = requests.get(checkout, timeout=10)
    assert f'src="{stripe_js_double}"' in html.text
    assert "script-src 'self' http://127.0.0.1" in html.headers["Content-Security-Policy"]


def stand_in_intents_of(settings, amount: int) -> list[dict[str, Any]]:
    """Every PaymentIntent of this amount at the stand-in, all pages of the list: other tests
    of the session create PaymentIntents too, more than one page of them."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = requests.get(
            f"{settings.stripe_api_base}/v1/payment_intents",
            params=params,
            auth=(settings.stripe_secret_key, ""),
            timeout=10,
        ).json()
        found += [intent for intent in page["data"] if intent["amount"] == amount]
        if not page.get("has_more") or not page["data"]:
            return found
        params["starting_after"] = page["data"][-1]["id"]


@pytest.fixture
def stalled_checkout(settings, stripe_js_double, stand_in, live_api) -> Iterator[str]:
    """A checkout whose worker never records the outcome (its broker has no consumer): the
    page waits past its timeout for a result that does not come."""
    stalled = replace(
        settings,
        stripe_js_url=stripe_js_double,
        checkout_demo=True,
        redis_url=f"{REDIS_HOST}/11",
        checkout_status_timeout_seconds=2,
    )
    served = ServedApp(create_app(stalled))
    stand_in.register_webhook(f"{served.url}/webhook")
    try:
        yield served.url
    finally:
        stand_in.register_webhook(f"{live_api.url}/webhook")
        served.stop()


def test_a_second_click_while_the_outcome_is_unknown_never_charges_twice(
    browser, stalled_checkout, settings
):
    # An amount no other test pays: how this test tells its own PaymentIntents apart.
    amount = 60_000 + secrets.randbelow(30_000)
    context = browser.new_context()
    page = context.new_page()
    page.goto(stalled_checkout)
    pay(page, "4242 4242 4242 4242", amount=f"{amount / 100:.2f}")
    wait_until(
        lambda: [i["status"] for i in stand_in_intents_of(settings, amount)] == ["succeeded"],
        30,
        "the first payment to succeed at the stand-in",
    )
    # Past the timeout: "still processing" (before the fix: "failed", and Pay offered again).
    page.wait_for_function(
        "() => ['failed', 'delayed'].includes(document.getElementById('status').dataset.state)",
        timeout=90_000,
    )

    # The customer clicks again (or a script submits the form past a disabled button) ...
    page.locator("#payment-form").evaluate("form => form.requestSubmit()")
    wait_until(
        lambda: (
            page.locator("#status").get_attribute("data-refused-resubmits") == "1"
            or len(stand_in_intents_of(settings, amount)) > 1
        ),
        30,
        "the second submit to be refused or to charge again",
    )
    assert len(stand_in_intents_of(settings, amount)) == 1, "charged twice"
    expect(page.locator("#status")).to_contain_text("still processing")
    expect(page.locator("#pay")).to_be_disabled()
    # ... and reloads the page: the paid order is followed, not offered again.
    page.reload()
    expect(page.locator("#pay")).to_be_disabled()
    expect(page.locator("#status")).to_have_attribute(
        "data-state", re.compile("processing|delayed")
    )
    shot(page, "second-click-refused")
    context.close()

    assert len(stand_in_intents_of(settings, amount)) == 1


def test_polling_backs_off_and_never_sooner_than_retry_after(page):
    delays = page.evaluate(
        """async () => {
            const m = await import('/static/payment.js');
            const low = () => 0;
            return {
                first: m.nextPollDelay(0, { baseMs: 500, capMs: 10000, random: low }),
                later: m.nextPollDelay(6, { baseMs: 500, capMs: 10000, random: low }),
                capped: m.nextPollDelay(30, { baseMs: 500, capMs: 10000, random: () => 1 }),
                server: m.nextPollDelay(0, { baseMs: 500, capMs: 10000, serverMs: 60000 }),
                seconds: m.retryAfterMs('7'),
                date: m.retryAfterMs(new Date(Date.now() + 5000).toUTCString()),
                none: m.retryAfterMs(null),
            };
        }"""
    )
    assert delays["first"] == 250
    assert delays["later"] == 5000
    assert delays["capped"] == 10000
    assert delays["server"] == 60000
    assert delays["seconds"] == 7000
    assert 3000 <= delays["date"] <= 5000
    assert delays["none"] is None


def test_a_rate_limited_status_read_keeps_waiting(browser, stalled_checkout, settings):
    """A 429 on a status read (before the fix: the page stopped following the payment)."""
    context = browser.new_context()
    page = context.new_page()
    limited: list[int] = []

    def first_two_limited(route: Any) -> None:
        if len(limited) < 2:
            limited.append(1)
            route.fulfill(status=429, headers={"Retry-After": "1"}, body="{}")
        else:
            route.continue_()

    page.route("**/api/payments/*", first_two_limited)
    page.goto(stalled_checkout)
    pay(page, "4242 4242 4242 4242")
    expect(page.locator("#status")).to_have_attribute("data-backing-off", "true", timeout=30_000)
    expect(page.locator("#status")).to_have_attribute("data-state", "delayed", timeout=30_000)
    expect(page.locator("#pay")).to_be_disabled()
    context.close()
