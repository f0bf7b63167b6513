"""The merchant sets the price (issue 23, item 1): checkout sessions an API client creates and
prices, which a browser only pays. Against the real app, PostgreSQL and the Stripe stand-in."""

from __future__ import annotations

import secrets
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
import requests
from sqlalchemy import text

from api import create_app
from devtools.processes import wait_until
from shared.config import Settings
from shared.infra.broker import make_producer
from shared.task_names import SWEEP_TASK
from tests.conftest import API_CLIENT_KEY, OTHER_API_CLIENT_KEY
from tests.integration.test_payment_trust import client_of

ORDER: dict[str, Any] = {"amount": 4321, "currency": "usd", "metadata": {"orderId": "ord-500"}}


@pytest.fixture(scope="module")
def app(settings: Settings, database):
    return create_app(settings)


def new_session(app, order: dict[str, Any] | None = None, key: str = API_CLIENT_KEY) -> dict:
    response = client_of(app, key).post("/api/checkout-sessions", json=order or ORDER)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def pay(app, token: str, body: dict[str, Any] | None = None):
    """The browser's create-payment: the session's token, and by default no body at all."""
    headers = {"X-Checkout-Session": token}
    if body is None:
        return app.test_client().post("/api/create-payment", headers=headers)
    return app.test_client().post("/api/create-payment", headers=headers, json=body)


def at_stripe(settings: Settings, payment_intent_id: str) -> dict[str, Any]:
    return requests.get(
        f"{settings.stripe_api_base}/v1/payment_intents/{payment_intent_id}",
        auth=(settings.stripe_secret_key, ""),
        timeout=10,
    ).json()


def test_nobody_mints_a_session_without_an_api_client_key(app):
    session = new_session(app)
    anonymous = app.test_client().post("/api/checkout-sessions", json=ORDER)
    # A session's own token is a browser's credential, never a back end's.
    by_a_browser = app.test_client().post(
        "/api/checkout-sessions", json=ORDER, headers={"X-Checkout-Session": session["token"]}
    )

    for refused in (anonymous, by_a_browser):
        assert refused.status_code == 401
        assert refused.get_json()["error"]["code"] == "api_client_required"
    assert session["id"].startswith("cs_")
    assert session["url"] == f"/checkout/{session['id']}#{session['token']}"
    assert (session["amount"], session["currency"]) == (4321, "usd")


def test_the_browser_pays_the_price_the_back_end_set(app, settings):
    session = new_session(app)

    first = pay(app, session["token"])
    again = pay(app, session["token"], {})

    assert first.status_code == again.status_code == 200
    assert first.headers["Idempotent-Replayed"] == "false"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["paymentIntentId"] == first.get_json()["paymentIntentId"]
    intent = at_stripe(settings, first.get_json()["paymentIntentId"])
    assert (intent["amount"], intent["currency"]) == (4321, "usd")
    assert intent["metadata"] == {
        "orderId": "ord-500",
        "payments_caller": f"session:{session['id']}",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 50),
        ("amount", 4321.0),
        ("currency", "eur"),
        ("metadata", {"orderId": "ord-1"}),
        ("metadata", {}),
        ("captureMethod", "manual"),
    ],
)
def test_a_body_that_names_another_value_is_refused_naming_the_field(app, field, value):
    session = new_session(app)

    refused = pay(app, session["token"], {field: value})

    assert refused.status_code == 409
    assert refused.get_json()["error"]["code"] == "checkout_session_mismatch"
    assert refused.get_json()["error"]["field"] == field
    # Nothing was created: the session still pays its own order.
    assert pay(app, session["token"]).headers["Idempotent-Replayed"] == "false"


def test_a_body_that_names_the_sessions_own_values_is_the_same_payment(app):
    session = new_session(app)
    same = {**ORDER, "captureMethod": "automatic"}

    assert pay(app, session["token"], same).status_code == 200
    assert pay(app, session["token"]).headers["Idempotent-Replayed"] == "true"


def test_an_expired_session_is_gone(app, database):
    session = new_session(app, {**ORDER, "expiresInSeconds": 60})
    with database.begin() as connection:
        connection.execute(
            text("UPDATE checkout_sessions SET expires_at = now() - interval '1 s' WHERE id = :id"),
            {"id": session["id"]},
        )

    refused = pay(app, session["token"])
    page = app.test_client().get(f"/checkout/{session['id']}")

    assert refused.status_code == 410
    assert refused.get_json()["error"]["code"] == "checkout_session_expired"
    assert page.status_code == 410


def test_a_paid_session_is_used_up(app, database):
    session = new_session(app)
    created = pay(app, session["token"]).get_json()
    with database.begin() as connection:
        # What payment_intent.succeeded's handler records.
        connection.execute(
            text("UPDATE payments SET status = 'succeeded' WHERE payment_intent_id = :id"),
            {"id": created["paymentIntentId"]},
        )

    refused = pay(app, session["token"])

    assert refused.status_code == 410
    assert refused.get_json()["error"]["code"] == "checkout_session_completed"


def test_its_creator_expires_a_session_and_its_unpaid_payment_is_canceled(app, settings):
    session = new_session(app)
    created = pay(app, session["token"]).get_json()
    expire_url = f"/api/checkout-sessions/{session['id']}/expire"

    by_another_client = client_of(app, OTHER_API_CLIENT_KEY).post(expire_url)
    expired = client_of(app).post(expire_url)
    expired_again = client_of(app).post(expire_url)

    assert by_another_client.status_code == 404
    assert expired.status_code == expired_again.status_code == 200
    assert expired.get_json() == {"id": session["id"], "status": "expired"}
    assert at_stripe(settings, created["paymentIntentId"])["status"] == "canceled"
    assert pay(app, session["token"]).status_code == 410


def test_a_session_of_another_deployment_is_not_ours(app, settings):
    foreign = create_app(replace(settings, encryption_keys=(secrets_key(),)))
    token = new_session(foreign)["token"]
    refused = pay(app, token)
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "invalid_caller"


def secrets_key() -> str:
    import base64

    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def test_who_made_a_payment_is_in_stripes_metadata_and_in_its_view(app, settings):
    session = new_session(app)
    by_session = pay(app, session["token"]).get_json()
    by_client = (
        client_of(app)
        .post("/api/create-payment", json=ORDER, headers={"Idempotency-Key": secrets.token_hex(8)})
        .get_json()
    )

    def view(created: dict) -> dict:
        return (
            app.test_client()
            .get(
                f"/api/payments/{created['paymentIntentId']}",
                headers={"X-Client-Secret": created["clientSecret"]},
            )
            .get_json()
        )

    assert at_stripe(settings, by_client["paymentIntentId"])["metadata"]["payments_caller"] == (
        "client:tests"
    )
    assert view(by_session)["checkoutSession"] == session["id"]
    assert view(by_client)["checkoutSession"] is None
    # The view's metadata is what the order asked for.
    assert view(by_client)["metadata"] == {"orderId": "ord-500"}


def test_no_caller_may_set_the_caller_metadata_itself(app):
    forged = {**ORDER, "metadata": {"payments_caller": "client:someone-else"}}
    for path in ("/api/create-payment", "/api/checkout-sessions"):
        refused = client_of(app).post(
            path, json=forged, headers={"Idempotency-Key": secrets.token_hex(8)}
        )
        assert refused.status_code == 400
        assert refused.get_json()["error"]["field"] == "metadata.payments_caller"


def test_the_session_page_shows_the_order_and_no_amount_field(app):
    session = new_session(app, {"amount": 1500, "currency": "jpy"})

    page = app.test_client().get(f"/checkout/{session['id']}")
    missing = app.test_client().get("/checkout/cs_doesnotexist")

    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "1500 JPY" in html
    assert 'id="amount"' not in html
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert missing.status_code == 404


def test_the_demo_page_is_served_only_in_demo_mode(app, settings, database):
    demo = create_app(replace(settings, checkout_demo=True))

    closed = app.test_client().get("/")
    page = demo.test_client().get("/")
    anonymous = demo.test_client().post("/api/checkout-sessions", json=ORDER)

    assert closed.status_code == 404
    assert closed.get_json()["error"]["code"] == "not_found"
    assert page.status_code == 200 and 'id="amount"' in page.get_data(as_text=True)
    assert anonymous.status_code == 201


def session_with_payment(base: str) -> tuple[dict[str, Any], dict[str, str], str]:
    """Over HTTP, as the back end and the browser would: a session, the browser's header for
    it, and the PaymentIntent it created."""
    auth = {"Authorization": f"Bearer {API_CLIENT_KEY}"}
    session = requests.post(
        f"{base}/api/checkout-sessions", json=ORDER, headers=auth, timeout=10
    ).json()
    token = {"X-Checkout-Session": session["token"]}
    created = requests.post(f"{base}/api/create-payment", headers=token, timeout=10)
    return session, token, created.json()["paymentIntentId"]


def test_a_session_declined_five_times_is_ended_and_its_payment_canceled(
    live_api, stand_in, settle, settings, database
):
    """Card testing: confirmations go from the browser straight to Stripe, so the service counts
    the session's payment_failed events and, at the limit (5 by default), ends the session and
    has the sweeper cancel its PaymentIntent."""
    session, token, intent_id = session_with_payment(live_api.url)
    producer = make_producer(settings)

    def failures_counted() -> int:
        with database.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT failed_attempts FROM checkout_sessions WHERE id = :id"),
                    {"id": session["id"]},
                ).scalar_one()
            )

    def counted(attempts: int) -> bool:
        return failures_counted() == attempts

    for attempt in range(1, 6):
        stand_in.pay(intent_id, "4000000000000002")
        # The stand-in posts the decline's event after answering: wait for it to be applied.
        wait_until(partial(counted, attempt), 30, f"decline {attempt} counted")
        producer.send_task(SWEEP_TASK)
        settle()
        status = at_stripe(settings, intent_id)["status"]
        # Four declines are a customer trying cards; the fifth ends it.
        assert status == ("canceled" if attempt == 5 else "requires_payment_method"), attempt
    producer.close()

    again = requests.post(f"{live_api.url}/api/create-payment", headers=token, timeout=10)
    assert again.status_code == 410
    assert again.json()["error"]["code"] == "checkout_session_expired"


def test_a_session_whose_time_is_up_has_its_unpaid_payment_canceled(
    live_api, settle, settings, database
):
    """The browser keeps the client secret after the session's time: the sweeper ends the
    session and cancels its PaymentIntent, as an explicit expire does."""
    session, _, intent_id = session_with_payment(live_api.url)
    with database.begin() as connection:
        connection.execute(
            text("UPDATE checkout_sessions SET expires_at = now() - interval '1 s' WHERE id = :id"),
            {"id": session["id"]},
        )

    producer = make_producer(settings)
    producer.send_task(SWEEP_TASK)
    settle()
    producer.close()

    assert at_stripe(settings, intent_id)["status"] == "canceled"
    with database.connect() as connection:
        reason = connection.execute(
            text("SELECT expired_reason FROM checkout_sessions WHERE id = :id"),
            {"id": session["id"]},
        ).scalar_one()
    assert reason == "expired"
