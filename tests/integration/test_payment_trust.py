"""Who may create and read payments, and what an idempotency key may replay (issue 9, 2-4)."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
import threading
from dataclasses import replace

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text, update

from api import create_app
from devtools.processes import REPO_ROOT
from shared.config import Settings
from shared.infra.stripe_gateway import StripeGateway
from shared.models import Payment
from tests.conftest import ADMIN_TOKEN, API_CLIENT_KEY, OTHER_API_CLIENT_KEY
from tests.integration.test_create_payment import stand_in_intents

BODY = {"amount": 2300, "currency": "usd"}


@pytest.fixture(scope="module")
def app(settings: Settings, database):
    return create_app(settings)


def client_of(app, key: str | None = API_CLIENT_KEY) -> FlaskClient:
    client = app.test_client()
    if key:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client


def create(client: FlaskClient, key: str, body: dict | None = None, **headers: str):
    return client.post(
        "/api/create-payment", json=body or BODY, headers={"Idempotency-Key": key, **headers}
    )


def test_create_without_a_caller_is_401(app):
    response = create(client_of(app, None), secrets.token_hex(8))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "caller_required"


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer not-a-key-we-issued-at-all-xx"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-Checkout-Session": "forged.session"},
        {"X-Checkout-Session": "A" * 32 + "." + "B" * 22},
    ],
)
def test_a_false_credential_is_401_never_anonymous(app, headers):
    response = create(client_of(app, None), secrets.token_hex(8), **headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_caller"


def test_the_same_key_from_two_callers_is_two_payments(app, settings):
    key, marker = secrets.token_hex(16), secrets.token_hex(6)
    body = {**BODY, "metadata": {"marker": marker}}

    mine = create(client_of(app), key, body)
    theirs = create(client_of(app, OTHER_API_CLIENT_KEY), key, body)

    assert mine.status_code == theirs.status_code == 200
    assert theirs.headers["Idempotent-Replayed"] == "false"
    assert mine.get_json()["paymentIntentId"] != theirs.get_json()["paymentIntentId"]
    assert mine.get_json()["clientSecret"] not in theirs.get_data(as_text=True)
    assert len(stand_in_intents(settings, marker)) == 2


def test_another_callers_key_with_another_body_is_not_a_409(app):
    key = secrets.token_hex(16)
    assert create(client_of(app), key).status_code == 200
    # A 409 would tell a stranger the key exists.
    other = create(client_of(app, OTHER_API_CLIENT_KEY), key, {**BODY, "amount": 9900})
    assert other.status_code == 200


def test_each_checkout_session_is_a_caller_of_its_own(app):
    def session_token() -> str:
        return client_of(app).post("/api/checkout-sessions", json=BODY).get_json()["token"]

    mine, theirs = session_token(), session_token()
    key = secrets.token_hex(16)

    def create_as(token: str):
        headers = {"Idempotency-Key": key, "X-Checkout-Session": token}
        return app.test_client().post("/api/create-payment", json=BODY, headers=headers)

    first, again, other = create_as(mine), create_as(mine), create_as(theirs)

    assert first.status_code == again.status_code == other.status_code == 200
    assert again.get_json() == first.get_json()
    assert other.get_json()["paymentIntentId"] != first.get_json()["paymentIntentId"]


def test_status_needs_the_client_secret(app):
    created = create(client_of(app), secrets.token_hex(8)).get_json()
    url = f"/api/payments/{created['paymentIntentId']}"
    other_secret = create(client_of(app), secrets.token_hex(8)).get_json()["clientSecret"]
    anyone = app.test_client()

    refused = [
        anyone.get(url),
        anyone.get(url, headers={"X-Client-Secret": other_secret}),
        anyone.get(url, headers={"Authorization": f"Bearer {API_CLIENT_KEY}"}),
        # Operators read payments under /admin/ only: not on the public route, nor its budget.
        anyone.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}),
    ]
    with_secret = anyone.get(url, headers={"X-Client-Secret": created["clientSecret"]})
    with_admin = anyone.get(
        f"/admin/payments/{created['paymentIntentId']}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )

    unknown = anyone.get("/api/payments/pi_doesnotexist").get_json()
    for response in refused:
        assert response.status_code == 404
        # Indistinguishable from an id that does not exist.
        assert response.get_json() == unknown
    assert with_secret.status_code == with_admin.status_code == 200
    assert with_secret.get_json()["amount"] == BODY["amount"]


def test_only_a_hash_of_the_client_secret_is_stored(app, sessions):
    created = create(client_of(app), secrets.token_hex(8)).get_json()
    with sessions() as session:
        row = session.execute(
            select(Payment).where(Payment.payment_intent_id == created["paymentIntentId"])
        ).scalar_one()
    assert row.client_secret_sha256 and len(row.client_secret_sha256) == 64
    assert created["clientSecret"] not in repr(
        [getattr(row, c.key) for c in Payment.__mapper__.column_attrs]
    )


def own_database_ports() -> list[int]:
    """The local ports of this process's TCP connections to PostgreSQL (5432), read from
    /proc: what pg_stat_activity calls their client_port."""
    sockets = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed since the listing
        if target.startswith("socket:["):
            sockets.add(target[len("socket:[") : -1])
    ports = []
    with open("/proc/self/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in sockets and remote.endswith(":1538"):  # 5432 in hex
                ports.append(int(local.rsplit(":", 1)[1], 16))
    return ports


class WatchingGateway:
    """The real gateway, looking at PostgreSQL while Stripe is being called."""

    def __init__(self, settings: Settings, sessions, database_name: str) -> None:
        self._real = StripeGateway.from_settings(settings)
        self._sessions = sessions
        self._database = database_name
        self.open_transactions: list[int] = []
        self.row_lockable: list[bool] = []
        self.release = threading.Event()
        self.inside = threading.Event()

    def create_payment_intent(self, **kwargs):
        ports = own_database_ports()
        # At least the connection this check itself runs on: /proc was read right.
        assert ports, "no connection of this process to PostgreSQL found in /proc/self/net/tcp"
        with self._sessions() as session:
            # This process's connections only: the session's worker, in a process of its own,
            # may be between two statements of an ingest at this moment.
            self.open_transactions.append(
                session.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = :db "
                        "AND application_name = 'payments' AND state LIKE 'idle in transaction%' "
                        "AND client_port = ANY(:ports)"
                    ),
                    {"db": self._database, "ports": ports},
                ).scalar_one()
            )
            # Our own idempotency row: nobody may be holding a lock on it now.
            locked = session.execute(
                text(
                    "SELECT id FROM payments WHERE payment_intent_id IS NULL "
                    "AND create_lease_until IS NOT NULL FOR UPDATE SKIP LOCKED"
                )
            ).all()
            self.row_lockable.append(bool(locked))
            session.rollback()
        self.inside.set()
        self.release.wait(30)
        return self._real.create_payment_intent(**kwargs)

    def retrieve_payment_intent(self, payment_intent_id):
        return self._real.retrieve_payment_intent(payment_intent_id)


def test_no_connection_or_lock_is_held_while_stripe_is_called(settings, sessions):
    gateway = WatchingGateway(settings, sessions, settings.database_url.rsplit("/", 1)[1])
    app = create_app(settings, gateway=gateway)
    key = secrets.token_hex(16)
    first: list = []
    worker = threading.Thread(target=lambda: first.append(create(client_of(app), key)))
    worker.start()
    assert gateway.inside.wait(30)

    concurrent = create(client_of(app), key)
    gateway.release.set()
    worker.join(30)

    assert gateway.open_transactions == [0]
    assert gateway.row_lockable == [True]
    assert concurrent.status_code == 409
    assert concurrent.get_json()["error"]["code"] == "idempotency_key_in_use"
    assert int(concurrent.headers["Retry-After"]) >= 1
    assert first[0].status_code == 200
    replay = create(client_of(app), key)
    assert replay.get_json()["paymentIntentId"] == first[0].get_json()["paymentIntentId"]


def test_a_process_dying_after_stripe_answered_leaves_one_payment_intent(
    settings, base_env, sessions
):
    key, marker = secrets.token_hex(16), secrets.token_hex(6)
    body = {**BODY, "metadata": {"marker": marker}}
    # A web process that is SIGKILLed the moment Stripe has answered, before our commit.
    died = subprocess.run(
        [sys.executable, "-m", "tests.support.die_after_stripe", key, marker],
        env={**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert died.returncode == -9, died.stderr.decode()[-2000:]
    [made] = stand_in_intents(settings, marker)
    app = create_app(settings)

    while_leased = create(client_of(app), key, body)
    # Time passes: the dead process's lease on the key runs out.
    with sessions.begin() as session:
        session.execute(
            update(Payment)
            .where(Payment.idempotency_key == key)
            .values(create_lease_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    retried = create(client_of(app), key, body)

    assert while_leased.status_code == 409
    assert retried.status_code == 200, retried.get_json()
    assert retried.get_json()["paymentIntentId"] == made["id"]
    assert len(stand_in_intents(settings, marker)) == 1


def test_a_stripe_failure_frees_the_key_at_once(settings, database):
    from devtools.processes import free_port

    offline = create_app(replace(settings, stripe_api_base=f"http://127.0.0.1:{free_port()}"))
    online = create_app(settings)
    key = secrets.token_hex(16)

    failed = create(client_of(offline), key)
    retried = create(client_of(online), key)

    assert failed.status_code == 503
    assert retried.status_code == 200


def test_deeply_nested_json_is_400_not_500(app):
    response = client_of(app).post(
        "/api/create-payment", data="[" * 60_000, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_json"


def test_an_oversized_api_body_is_413_before_parsing(app):
    body = b'{"amount": 1000, "currency": "usd", "metadata": {"k": "' + b"1" * 70_000 + b'"}}'
    response = client_of(app).post(
        "/api/create-payment", data=body, content_type="application/json"
    )
    assert response.status_code == 413
    assert response.get_json()["success"] is False
