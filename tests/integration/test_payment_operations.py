"""The operators' refund, capture and cancel, and create-payment's captureMethod, on the real
parts: our API served on a port, the stand-in, its webhooks, Redis, a worker and PostgreSQL."""

from __future__ import annotations

import logging
import os
import re
import secrets
import subprocess
from dataclasses import replace
from typing import Any

import pytest
import requests
import stripe

from api import create_app
from devtools.processes import REPO_ROOT, run_payments
from tests.conftest import ADMIN_TOKEN, API_CLIENT_KEY


def create(api, body: dict[str, Any], key: str | None = None) -> requests.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return api.create_payment({"currency": "usd", **body}, **headers)


def stand_in_intent(settings, payment_intent_id: str) -> dict[str, Any]:
    response = requests.get(
        f"{settings.stripe_api_base}/v1/payment_intents/{payment_intent_id}",
        auth=(settings.stripe_secret_key, ""),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    intent: dict[str, Any] = response.json()
    return intent


def test_capture_method_manual_reaches_stripe_and_belongs_to_the_key(api, settings):
    key = f"order-{secrets.token_hex(6)}"
    manual = create(api, {"amount": 1500, "captureMethod": "manual"}, key)
    assert manual.status_code == 200, manual.text
    intent_id = manual.json()["paymentIntentId"]
    assert stand_in_intent(settings, intent_id)["capture_method"] == "manual"

    again = create(api, {"amount": 1500, "captureMethod": "manual"}, key)
    assert again.json()["paymentIntentId"] == intent_id
    assert again.headers["Idempotent-Replayed"] == "true"
    # The same key for the same order without captureMethod is another request.
    other = create(api, {"amount": 1500}, key)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"

    # Without captureMethod, Stripe's default (automatic) stands.
    default = create(api, {"amount": 1500})
    other_intent = stand_in_intent(settings, default.json()["paymentIntentId"])
    assert other_intent["capture_method"] != "manual"


def test_a_bad_capture_method_is_a_400_naming_the_choices(api):
    response = create(api, {"amount": 1600, "captureMethod": "later"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["field"], error["message"]) == (
        "captureMethod",
        "must be one of automatic, manual",
    )


class Admin:
    """The operators' API on the served app, with the admin token."""

    def __init__(self, base: str, token: str | None = ADMIN_TOKEN) -> None:
        self.base = base
        self.token = token

    def post(
        self, payment_intent_id: str, operation: str, body: Any = None, key: str | None = "auto"
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if key is not None:
            headers["Idempotency-Key"] = secrets.token_hex(8) if key == "auto" else key
        return requests.post(
            f"{self.base}/admin/payments/{payment_intent_id}/{operation}",
            json=body,
            headers=headers,
            timeout=30,
        )


@pytest.fixture
def admin(live_api) -> Admin:
    return Admin(live_api.url)


def paid(api, stand_in, amount: int = 1000, **body: Any) -> str:
    response = create(api, {"amount": amount, **body})
    assert response.status_code == 200, response.text
    intent_id: str = response.json()["paymentIntentId"]
    stand_in.pay(intent_id, "4242424242424242")
    if not body.get("captureMethod"):
        # Paid in our ledger too, so what a test then reads of it is not racing the webhook.
        api.wait_for_status(intent_id, "succeeded")
    return intent_id


def stand_in_refunds(settings, payment_intent_id: str) -> list[dict[str, Any]]:
    response = requests.get(
        f"{settings.stripe_api_base}/v1/refunds",
        auth=(settings.stripe_secret_key, ""),
        params={"payment_intent": payment_intent_id, "limit": "100"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    refunds: list[dict[str, Any]] = response.json()["data"]
    return refunds


def test_a_partial_then_a_full_refund(api, admin, stand_in, settings):
    intent_id = paid(api, stand_in)
    api.wait_for_status(intent_id, "succeeded")

    partial = admin.post(intent_id, "refunds", {"amount": 300, "reason": "requested_by_customer"})

    assert partial.status_code == 200, partial.text
    view = partial.json()
    assert (view["paymentIntentId"], view["status"]) == (intent_id, "succeeded")
    assert [(r["amount"], r["reason"]) for r in view["refunds"]] == [(300, "requested_by_customer")]
    assert view["amountRefunded"] == 300

    rest = admin.post(intent_id, "refunds")

    assert rest.status_code == 200, rest.text
    view = rest.json()
    # The payment's own status stays Stripe's PaymentIntent status.
    assert view["status"] == "succeeded"
    assert sorted(r["amount"] for r in view["refunds"]) == [300, 700]
    assert view["amountRefunded"] == 1000
    assert sorted(r["amount"] for r in stand_in_refunds(settings, intent_id)) == [300, 700]


def test_a_refund_past_what_is_left_is_refused_with_stripes_code(api, admin, stand_in, settings):
    intent_id = paid(api, stand_in)
    assert admin.post(intent_id, "refunds", {"amount": 600}).status_code == 200

    refused = admin.post(intent_id, "refunds", {"amount": 401})

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "amount_too_large"
    assert [r["amount"] for r in stand_in_refunds(settings, intent_id)] == [600]


def test_a_retried_key_never_refunds_twice(api, admin, stand_in, settings):
    intent_id = paid(api, stand_in)
    key = f"refund-{secrets.token_hex(6)}"

    first = admin.post(intent_id, "refunds", {"amount": 250}, key=key)
    again = admin.post(intent_id, "refunds", {"amount": 250}, key=key)

    assert (first.status_code, again.status_code) == (200, 200), again.text
    assert [r["amount"] for r in stand_in_refunds(settings, intent_id)] == [250]
    assert [r["id"] for r in again.json()["refunds"]] == [r["id"] for r in first.json()["refunds"]]
    # The key names that refund: with another amount it is refused, not a second refund.
    reused = admin.post(intent_id, "refunds", {"amount": 300}, key=key)
    assert reused.status_code == 409
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert len(stand_in_refunds(settings, intent_id)) == 1


def test_a_manual_capture_payment_captured_in_part(api, admin, stand_in, settings):
    intent_id = paid(api, stand_in, 2000, captureMethod="manual")
    assert stand_in_intent(settings, intent_id)["status"] == "requires_capture"

    captured = admin.post(intent_id, "capture", {"amount": 1500})

    assert captured.status_code == 200, captured.text
    view = captured.json()
    assert (view["status"], view["captureMethod"]) == ("succeeded", "manual")
    assert (view["amountReceived"], view["amountCapturable"]) == (1500, 0)
    assert stand_in_intent(settings, intent_id)["amount_received"] == 1500
    # Captured once: a second capture is Stripe's refusal, with Stripe's code.
    again = admin.post(intent_id, "capture")
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "payment_intent_unexpected_state"


def test_a_cancelled_payment(api, admin, settings):
    response = create(api, {"amount": 1200})
    intent_id = response.json()["paymentIntentId"]

    canceled = admin.post(intent_id, "cancel", {"reason": "abandoned"})

    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    intent = stand_in_intent(settings, intent_id)
    assert (intent["status"], intent["cancellation_reason"]) == ("canceled", "abandoned")
    api.wait_for_status(intent_id, "canceled")
    # Final: cancelling again is Stripe's refusal.
    again = admin.post(intent_id, "cancel")
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "payment_intent_unexpected_state"


def test_a_succeeded_payment_cannot_be_cancelled(api, admin, stand_in):
    intent_id = paid(api, stand_in)

    refused = admin.post(intent_id, "cancel")

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "payment_intent_unexpected_state"
    assert api.wait_for_status(intent_id, "succeeded")["status"] == "succeeded"


@pytest.mark.parametrize("operation", ["refunds", "capture", "cancel"])
def test_operations_need_the_admin_token(live_api, api, operation):
    intent_id = create(api, {"amount": 1000}).json()["paymentIntentId"]
    for token in (None, API_CLIENT_KEY, ADMIN_TOKEN + "x"):
        refused = Admin(live_api.url, token).post(intent_id, operation)
        assert refused.status_code == 401, token
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="admin"'
        assert refused.json()["error"]["code"] == "unauthorized"


def test_without_an_admin_token_configured_the_operations_do_not_exist(settings, database):
    client = create_app(replace(settings, operators=())).test_client()
    for operation in ("refunds", "capture", "cancel"):
        response = client.post(
            f"/admin/payments/pi_x/{operation}",
            json={},
            headers={"Authorization": "Bearer anything", "Idempotency-Key": "k"},
        )
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("operation", "body", "field"),
    [
        ("refunds", {"amount": 0}, "amount"),
        ("refunds", {"amount": "300"}, "amount"),
        ("refunds", {"reason": "changed_my_mind"}, "reason"),
        ("refunds", {"amount": 300, "currency": "usd"}, "currency"),
        ("refunds", [300], "body"),
        ("capture", {"amount": -1}, "amount"),
        ("capture", {"amount_to_capture": 100}, "amount_to_capture"),
        ("cancel", {"reason": "expired"}, "reason"),
        ("cancel", {"amount": 100}, "amount"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(admin, api, operation, body, field):
    intent_id = create(api, {"amount": 1000}).json()["paymentIntentId"]

    refused = admin.post(intent_id, operation, body)

    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["field"] == field


def test_an_operation_needs_an_idempotency_key_and_json(admin, api, live_api):
    intent_id = create(api, {"amount": 1000}).json()["paymentIntentId"]
    missing = admin.post(intent_id, "refunds", {}, key=None)
    assert missing.status_code == 400
    assert missing.json()["error"]["field"] == "Idempotency-Key"
    not_json = requests.post(
        f"{live_api.url}/admin/payments/{intent_id}/cancel",
        data=b"{reason",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Idempotency-Key": "k"},
        timeout=10,
    )
    assert not_json.status_code == 400
    assert not_json.json()["error"]["field"] == "body"


def test_a_payment_intent_we_do_not_know_is_404(admin):
    for operation in ("refunds", "capture", "cancel"):
        response = admin.post("pi_unknown_to_us", operation)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_operations_are_rate_limited_like_the_operator_api(settings, database):
    limited = replace(settings, admin_rate_limit="3 per minute", rate_limit_storage_url="memory://")
    client = create_app(limited).test_client()

    # A wrong token is counted too, as on every /admin route: guessing costs the same budget.
    guesses = [
        client.post("/admin/payments/pi_x/refunds", headers={"Authorization": "Bearer guess"})
        for _ in range(4)
    ]

    assert [g.status_code for g in guesses] == [401, 401, 401, 429]


def test_every_operator_route_is_rate_limited(settings, database):
    """Each route under /admin/, whatever blueprint serves it: the limiter tells views apart by
    their names, and a view without one (a bare functools.partial) was silently not limited.
    One app; each route asked from a client address of its own, so each has a budget of its
    own (the limit is per client)."""
    limited = replace(settings, admin_rate_limit="3 per minute", rate_limit_storage_url="memory://")
    app = create_app(limited)
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/admin")]
    assert len(rules) >= 8
    client = app.test_client()
    for number, rule in enumerate(rules, start=1):
        method = "POST" if "POST" in (rule.methods or ()) else "GET"
        path = re.sub(r"<[^>]+>", "x", rule.rule)
        guesses = [
            client.open(
                path,
                method=method,
                headers={"Authorization": "Bearer guess"},
                environ_base={"REMOTE_ADDR": f"10.9.0.{number}"},
            )
            for _ in range(4)
        ]
        assert [g.status_code for g in guesses] == [401, 401, 401, 429], rule.rule


@pytest.fixture
def cli(base_env):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_payments(*args, env={**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT)})

    return run


def test_the_cli_refunds_once_per_key(api, live_api, stand_in, settings, cli):
    intent_id = paid(api, stand_in)
    key = f"cli-refund-{secrets.token_hex(6)}"
    command = ("refund", intent_id, "--amount", "200", "--reason", "duplicate")

    first = cli(*command, "--idempotency-key", key)
    # The first spelling (payments payments refund) still works, and replays the same refund.
    again = cli("payments", *command, "--idempotency-key", key)

    assert first.returncode == 0, first.stdout + first.stderr
    assert again.returncode == 0, again.stdout + again.stderr
    (refund,) = stand_in_refunds(settings, intent_id)
    assert (refund["amount"], refund["reason"]) == (200, "duplicate")
    assert first.stdout.splitlines()[0] == f"refund {refund['id']}: succeeded, 200 usd"
    assert again.stdout == first.stdout
    # The API and the CLI scope keys alike: the same key over the API is the same refund.
    over_api = Admin(live_api.url).post(
        intent_id, "refunds", {"amount": 200, "reason": "duplicate"}, key=key
    )
    assert over_api.status_code == 200
    assert len(stand_in_refunds(settings, intent_id)) == 1


def test_the_cli_captures_and_cancels(api, stand_in, settings, cli):
    manual = paid(api, stand_in, 2000, captureMethod="manual")
    captured = cli("capture", manual, "--amount", "1200", "--idempotency-key", "c1")
    assert captured.returncode == 0, captured.stdout + captured.stderr
    assert stand_in_intent(settings, manual)["amount_received"] == 1200
    assert f"payment {manual}: succeeded in the ledger" in captured.stdout

    pending = create(api, {"amount": 1300}).json()["paymentIntentId"]
    canceled = cli("cancel", pending, "--reason", "duplicate", "--idempotency-key", "x")
    assert canceled.returncode == 0, canceled.stdout + canceled.stderr
    assert stand_in_intent(settings, pending)["status"] == "canceled"
    assert f"payment {pending}: canceled in the ledger" in canceled.stdout


@pytest.mark.long
def test_the_cli_says_what_went_wrong(api, stand_in, cli):
    intent_id = paid(api, stand_in)

    no_key = cli("refund", intent_id)
    blank_key = cli("refund", intent_id, "--idempotency-key", " ")
    unknown = cli("cancel", "pi_unknown_to_us", "--idempotency-key", "k")
    refused = cli("cancel", intent_id, "--idempotency-key", "k")

    assert no_key.returncode == 2 and "--idempotency-key" in no_key.stderr
    assert blank_key.returncode == 2 and "must not be empty" in blank_key.stderr
    assert unknown.returncode == 1 and "no payment pi_unknown_to_us in the ledger" in unknown.stderr
    assert refused.returncode == 1
    assert "Stripe refused: payment_intent_unexpected_state" in refused.stderr


def test_a_refusal_answered_by_the_operator_api_itself_is_logged_with_stripes_request_id(
    settings, database, caplog
):
    from api.admin_payments import _stripe_refused

    caplog.set_level(logging.INFO)
    reused = stripe.IdempotencyError(
        "Keys for idempotent requests can only be used with the same parameters",
        headers={"request-id": "req_r3used"},
        code="idempotency_key_reused",
    )
    with create_app(settings).app_context():
        _, status = _stripe_refused(reused)

    assert status == 409
    assert "Stripe error IdempotencyError idempotency_key_reused" in caplog.text
    assert "req_r3used" in caplog.text and "same parameters" not in caplog.text
