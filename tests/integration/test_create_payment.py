"""POST /api/create-payment and GET /api/payments/<id> against PostgreSQL and the stand-in."""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import replace

import pytest
import requests
import stripe
from flask.testing import FlaskClient
from sqlalchemy import func, select

from api import create_app, stripe_error_response
from devtools.processes import free_port
from shared.config import Settings
from shared.models import Payment
from shared.observability.logs import configure_logging, install_redaction
from tests.conftest import ADMIN_TOKEN, API_CLIENT_KEY


@pytest.fixture(scope="module")
def app(settings: Settings, database):
    return create_app(settings)


@pytest.fixture
def client(app) -> FlaskClient:
    return as_api_client(app.test_client())


def as_api_client(client: FlaskClient, key: str = API_CLIENT_KEY) -> FlaskClient:
    """A test client that creates payments as an API client; reads go with the admin token."""
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def stand_in_intents(settings: Settings, marker: str) -> list[dict]:
    """The stand-in's PaymentIntents carrying our marker, every page of the list read: the
    session's other tests make more than a page of them."""
    found: list[dict] = []
    params: dict[str, str | int] = {"limit": 100}
    while True:
        page = requests.get(
            f"{settings.stripe_api_base}/v1/payment_intents",
            auth=(settings.stripe_secret_key, ""),
            params=params,
            timeout=10,
        ).json()
        found += [pi for pi in page["data"] if pi["metadata"].get("marker") == marker]
        if not page.get("has_more") or not page["data"]:
            return found
        params["starting_after"] = page["data"][-1]["id"]


def test_creates_a_payment_intent_and_records_it(client, settings, sessions):
    marker = secrets.token_hex(6)
    response = client.post(
        "/api/create-payment",
        json={"amount": 1000, "currency": "usd", "metadata": {"orderId": "123", "marker": marker}},
    )

    assert response.status_code == 200
    body = response.get_json()
    assert body["success"] is True
    assert body["paymentIntentId"].startswith("pi_")
    assert body["clientSecret"].startswith(body["paymentIntentId"] + "_secret_")
    assert [pi["id"] for pi in stand_in_intents(settings, marker)] == [body["paymentIntentId"]]

    view = client.get(f"/admin/payments/{body['paymentIntentId']}", headers=ADMIN).get_json()
    assert view["amount"] == 1000
    assert view["currency"] == "usd"
    assert view["status"] == "requires_payment_method"
    assert view["metadata"] == {"orderId": "123", "marker": marker}
    assert view["lastError"] is None
    assert set(view) == {
        "paymentIntentId", "amount", "currency", "status", "metadata", "lastError", "updatedAt",
        "captureMethod", "amountReceived", "amountCapturable", "amountRefunded", "refunds",
        "dispute", "checkoutSession",
    }  # fmt: skip
    # A back end's payment, not a checkout session's.
    assert view["checkoutSession"] is None
    # Nothing captured, refunded or disputed yet.
    assert (view["amountReceived"], view["amountRefunded"], view["refunds"]) == (0, 0, [])
    assert view["dispute"] is None


def test_client_secret_is_never_stored(client, sessions):
    body = client.post("/api/create-payment", json={"amount": 500, "currency": "eur"}).get_json()
    with sessions() as session:
        row = session.execute(
            select(Payment).where(Payment.payment_intent_id == body["paymentIntentId"])
        ).scalar_one()
        stored = " ".join(str(getattr(row, c.key)) for c in Payment.__mapper__.column_attrs)
    assert body["clientSecret"] not in stored
    assert "_secret_" not in stored


def test_unknown_payment_is_404_json(client):
    response = client.get("/api/payments/pi_doesnotexist")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"currency": "usd"}, "amount"),
        ({"amount": 10.5, "currency": "usd"}, "amount"),
        ({"amount": "1000", "currency": "usd"}, "amount"),
        ({"amount": True, "currency": "usd"}, "amount"),
        ({"amount": -5, "currency": "usd"}, "amount"),
        ({"amount": 100_000_000, "currency": "usd"}, "amount"),
        ({"amount": 10, "currency": "usd"}, "amount"),
        # Stripe charges ISK in whole krónur: 12345 (123.45 ISK) is refused before any row.
        ({"amount": 12345, "currency": "isk"}, "amount"),
        ({"amount": 1000}, "currency"),
        ({"amount": 1000, "currency": "USD"}, "currency"),
        ({"amount": 1000, "currency": "xyz"}, "currency"),
        ({"amount": 1000, "currency": "usd", "metadata": {"a": {"nested": 1}}}, "metadata.a"),
        ({"amount": 1000, "currency": "usd", "metadata": ["x"]}, "metadata"),
        ({"amount": 1000, "currency": "usd", "metadata": {"k" * 41: "v"}}, "metadata." + "k" * 41),
        ({"amount": 1000, "currency": "usd", "metadata": {"k": "v" * 501}}, "metadata.k"),
        (
            {"amount": 1000, "currency": "usd", "metadata": {str(i): "v" for i in range(51)}},
            "metadata",
        ),
        ({"amount": 1000, "currency": "usd", "customer": "cus_1"}, "customer"),
        ({"amount": 1000, "currency": "usd", "metadata": {"k": "a\x00b"}}, "metadata.k"),
        (
            {"amount": 1000, "currency": "usd", "metadata": {"note": "card 4242 4242 4242 4242"}},
            "metadata.note",
        ),
    ],
)
def test_invalid_input_is_400_naming_the_field(client, body, field, sessions):
    def rows_like_it() -> int:
        like_it = select(func.count()).select_from(Payment)
        like_it = like_it.where(Payment.amount == body.get("amount"))
        with sessions() as session:
            return int(session.execute(like_it).scalar_one())

    counted = type(body.get("amount")) is int
    before = rows_like_it() if counted else 0
    response = client.post("/api/create-payment", json=body)
    if counted:
        assert rows_like_it() == before  # refused before any row is written
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert response.get_json()["success"] is False
    assert error["field"] == field
    assert error["message"]


def test_same_key_and_body_returns_the_same_payment_intent(client, settings):
    key = secrets.token_hex(16)
    marker = secrets.token_hex(6)
    body = {"amount": 2500, "currency": "usd", "metadata": {"marker": marker}}

    first = client.post("/api/create-payment", json=body, headers={"Idempotency-Key": key})
    second = client.post("/api/create-payment", json=body, headers={"Idempotency-Key": key})

    assert first.status_code == second.status_code == 200
    assert first.get_json() == second.get_json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(stand_in_intents(settings, marker)) == 1


def test_a_rotated_api_client_key_keeps_the_clients_idempotency_keys(settings, database):
    """A client holds two tokens while it rotates (API_CLIENT_KEYS names it twice): a retry
    sent with the new token replays what the old one created, because both are the client."""
    old, new = "rotating-client-old-token-" + "o" * 8, "rotating-client-new-token-" + "n" * 8
    app = create_app(replace(settings, api_clients=(("rotating", old), ("rotating", new))))
    key, marker = secrets.token_hex(16), secrets.token_hex(6)
    body = {"amount": 2600, "currency": "usd", "metadata": {"marker": marker}}

    first = as_api_client(app.test_client(), old).post(
        "/api/create-payment", json=body, headers={"Idempotency-Key": key}
    )
    retried = as_api_client(app.test_client(), new).post(
        "/api/create-payment", json=body, headers={"Idempotency-Key": key}
    )

    assert first.status_code == retried.status_code == 200
    assert retried.get_json() == first.get_json()
    assert retried.headers["Idempotent-Replayed"] == "true"
    assert len(stand_in_intents(settings, marker)) == 1


def test_same_key_with_another_body_is_409(client):
    key = secrets.token_hex(16)
    ok = client.post(
        "/api/create-payment",
        json={"amount": 2500, "currency": "usd"},
        headers={"Idempotency-Key": key},
    )
    conflict = client.post(
        "/api/create-payment",
        json={"amount": 2600, "currency": "usd"},
        headers={"Idempotency-Key": key},
    )
    assert ok.status_code == 200
    assert conflict.status_code == 409
    assert conflict.get_json()["error"]["code"] == "idempotency_key_reused"


def test_concurrent_requests_with_one_key_create_one_payment_intent(app, settings, sessions):
    key = secrets.token_hex(16)
    marker = secrets.token_hex(6)
    body = {"amount": 4200, "currency": "usd", "metadata": {"marker": marker}}
    start = threading.Barrier(50)
    results: list[tuple[int, dict, str | None]] = []

    def request() -> None:
        client = as_api_client(app.test_client())
        start.wait()
        response = client.post("/api/create-payment", json=body, headers={"Idempotency-Key": key})
        results.append(
            (response.status_code, response.get_json(), response.headers.get("Retry-After"))
        )

    threads = [threading.Thread(target=request) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # As at Stripe: a request that finds the key still in flight is told to retry.
    assert {status for status, _, _ in results} <= {200, 409}
    in_use = [(body, after) for status, body, after in results if status == 409]
    assert all(b["error"]["code"] == "idempotency_key_in_use" and a for b, a in in_use)
    created = {b["paymentIntentId"] for status, b, _ in results if status == 200}
    assert len(created) == 1
    retried = as_api_client(app.test_client()).post(
        "/api/create-payment", json=body, headers={"Idempotency-Key": key}
    )
    assert retried.get_json()["paymentIntentId"] in created
    assert len(stand_in_intents(settings, marker)) == 1
    with sessions() as session:
        rows = session.execute(
            select(func.count()).select_from(Payment).where(Payment.idempotency_key == key)
        ).scalar_one()
    assert rows == 1


class _HeldStripe:
    """Holds create_payment_intent until released, so a second request meets the key in flight."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.entered = threading.Event()
        self.release = threading.Event()

    def create_payment_intent(self, **kwargs):
        self.entered.set()
        self.release.wait(30)
        return self._gateway().create_payment_intent(**kwargs)

    def retrieve_payment_intent(self, payment_intent_id):
        return self._gateway().retrieve_payment_intent(payment_intent_id)

    def _gateway(self):
        from shared.infra.stripe_gateway import StripeGateway, make_stripe_client

        return StripeGateway(make_stripe_client(self._settings))


def test_a_key_in_flight_is_answered_409_retry_after_one_second(settings, database):
    stripe_held = _HeldStripe(settings)
    app = create_app(settings, gateway=stripe_held)
    key, body = secrets.token_hex(16), {"amount": 1500, "currency": "usd"}
    first: list = []

    def create() -> None:
        client = as_api_client(app.test_client())
        first.append(
            client.post("/api/create-payment", json=body, headers={"Idempotency-Key": key})
        )

    holder = threading.Thread(target=create)
    holder.start()
    assert stripe_held.entered.wait(30)
    in_flight = as_api_client(app.test_client()).post(
        "/api/create-payment", json=body, headers={"Idempotency-Key": key}
    )
    stripe_held.release.set()
    holder.join(30)

    assert in_flight.status_code == 409
    assert in_flight.get_json()["error"]["code"] == "idempotency_key_in_use"
    # As Stripe says it: the holder is milliseconds from done. The rate limiter must not
    # stretch this to the end of its own window.
    assert in_flight.headers["Retry-After"] == "1"
    assert first[0].status_code == 200


def test_stripe_unreachable_is_503(settings, database):
    offline = replace(settings, stripe_api_base=f"http://127.0.0.1:{free_port()}")
    client = as_api_client(create_app(offline).test_client())

    response = client.post("/api/create-payment", json={"amount": 1000, "currency": "usd"})

    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "stripe_unreachable"


def test_stripe_card_error_is_402_and_request_error_400(app, caplog):
    caplog.set_level(logging.INFO)
    card = stripe.CardError(
        "Your card was declined.", None, code="card_declined", headers={"request-id": "req_c4rd"}
    )
    invalid = stripe.InvalidRequestError("No such customer", "customer", code="resource_missing")
    server = stripe.APIError("boom", http_status=500)
    with app.app_context():
        card_response, card_status = stripe_error_response(card)
        invalid_response, invalid_status = stripe_error_response(invalid)
        _, server_status = stripe_error_response(server)

    assert card_status == 402
    assert card_response.get_json()["error"]["code"] == "card_declined"
    assert invalid_status == 400
    assert invalid_response.get_json()["error"]["code"] == "resource_missing"
    assert server_status == 502
    # What reaches the log: the error, its code and Stripe's request id; never Stripe's text.
    assert "Stripe error CardError card_declined (HTTP None, request req_c4rd)" in caplog.text
    assert "declined" not in caplog.text.replace("card_declined", "")


class WebhookFirstGateway:
    """Stripe's gateway, plus the race where the PaymentIntent's webhook is processed before our
    create request commits (an SDK network retry makes that window seconds wide)."""

    def __init__(self, settings: Settings, sessions) -> None:
        from shared.infra.stripe_gateway import StripeGateway

        self._real = StripeGateway.from_settings(settings)
        self._sessions = sessions

    def create_payment_intent(self, **kwargs):
        import time as _time

        from shared.payments import apply_payment_intent

        intent = self._real.create_payment_intent(**kwargs)
        later = {
            "id": intent.id,
            "status": "processing",
            "amount": intent.amount,
            "currency": intent.currency,
            "metadata": intent.metadata,
        }
        with self._sessions.begin() as session:
            apply_payment_intent(session, later, as_of=_as_of(int(_time.time()) + 1))
        return intent

    def retrieve_payment_intent(self, payment_intent_id):
        return self._real.retrieve_payment_intent(payment_intent_id)


def _as_of(seconds: int):
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


@pytest.mark.parametrize("with_key", [True, False])
def test_webhook_row_created_first_is_kept_and_takes_the_key(settings, sessions, with_key):
    app = create_app(settings, gateway=WebhookFirstGateway(settings, sessions))
    client = as_api_client(app.test_client())
    key = secrets.token_hex(16)
    headers = {"Idempotency-Key": key} if with_key else {}
    body = {"amount": 3100, "currency": "usd"}

    response = client.post("/api/create-payment", json=body, headers=headers)

    assert response.status_code == 200, response.get_json()
    intent_id = response.get_json()["paymentIntentId"]
    with sessions() as session:
        rows = list(
            session.execute(select(Payment).where(Payment.payment_intent_id == intent_id)).scalars()
        )
    assert len(rows) == 1
    # The webhook's newer status survives our create.
    assert rows[0].status == "processing"
    assert rows[0].idempotency_key == (key if with_key else None)
    if with_key:
        again = client.post("/api/create-payment", json=body, headers=headers)
        assert again.status_code == 200
        assert again.get_json()["paymentIntentId"] == intent_id


def test_database_unreachable_is_503_json(settings):
    offline = replace(
        settings, database_url=f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x"
    )
    client = as_api_client(create_app(offline).test_client())

    read = client.get("/admin/payments/pi_anything", headers=ADMIN)
    create = client.post(
        "/api/create-payment",
        json={"amount": 1000, "currency": "usd"},
        headers={"Idempotency-Key": secrets.token_hex(8)},
    )

    for response in (read, create):
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "database_unavailable"


def test_numeric_metadata_keys_survive_the_round_trip(client):
    # Found by fuzzing: the stand-in echoes numeric metadata keys back as a list.
    body = {"amount": 1200, "currency": "usd", "metadata": {"8": "eight", "orderId": "9"}}

    response = client.post("/api/create-payment", json=body)

    assert response.status_code == 200, response.get_json()
    view = client.get(
        f"/admin/payments/{response.get_json()['paymentIntentId']}", headers=ADMIN
    ).get_json()
    assert view["metadata"] == {"8": "eight", "orderId": "9"}


@pytest.mark.parametrize(("level", "sdk_lines"), [("INFO", False), ("DEBUG", True)])
def test_the_sdks_own_line_per_call_is_kept_for_debug(level, sdk_lines):
    """At INFO a Stripe call leaves our lines (the payment, or its error with Stripe's request
    id), not the SDK's two per call."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers), logging.getLogger("stripe").level)
    try:
        configure_logging(level)
        assert logging.getLogger("stripe").isEnabledFor(logging.INFO) is sdk_lines
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        logging.getLogger("stripe").setLevel(saved[2])


def test_the_sdks_debug_lines_never_carry_a_body(settings, caplog):
    """At LOG_LEVEL=DEBUG the SDK logs every request and response body: a customer's email and
    address among them. The lines stay; their bodies are withheld."""
    from shared.infra.stripe_gateway import make_stripe_client

    install_redaction()
    caplog.set_level(logging.DEBUG, logger="stripe")
    email = f"jenny.rosen.{secrets.token_hex(4)}@example.com"
    client = make_stripe_client(settings)

    customer = client.v1.customers.create({"email": email, "name": "Jenny Rosen"})
    client.v1.customers.retrieve(customer.id)

    bodies = [r.getMessage() for r in caplog.records if "body" in r.getMessage()]
    assert bodies and all("withheld" in line for line in bodies)
    assert email not in caplog.text
