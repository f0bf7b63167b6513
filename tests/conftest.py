"""Fixtures: real PostgreSQL, real Redis, the localstripe stand-in and a real Celery worker.

Each test session gets its own database (dropped at the end) and its own Redis database index
(flushed at the start), so a test run never touches the data of a running dev stack.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from devtools.processes import (
    ARTIFACTS,
    REPO_ROOT,
    Process,
    ServedApp,
    celery_worker_args,
    free_port,
    port_open,
    python_module,
    redis_server_args,
    wait_until,
)
from devtools.standin import StandIn
from shared.config import Settings, load_settings
from shared.db import make_engine, make_session_factory
from shared.infra.broker import EVENTS_QUEUE, HANDLERS_QUEUE, make_producer
from shared.models import WorkerCanary
from shared.task_names import CANARY_TASK
from tests.support.brokers import (
    on_rabbitmq,
    rabbitmq_in_flight,
    rabbitmq_vhost,
    redis_in_flight,
)
from tests.support.fake_sentry import FakeSentry


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first, dealt out over the parallel processes. pytest-xdist's worksteal
    hands each process a contiguous share of this order: each share starts with its long tests,
    so none is left to run by itself at the end while the other processes idle. (No long test
    shares a module-scoped fixture: moving one never sets a fixture up twice.)"""
    processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    long = [item for item in items if item.get_closest_marker("long")]
    if processes < 2 or not long:
        return
    rest = [item for item in items if not item.get_closest_marker("long")]
    ordered: list[pytest.Item] = []
    for index in range(processes):
        share = long[index::processes]
        size = (index + 1) * len(items) // processes - index * len(items) // processes
        taken = max(0, size - len(share))
        ordered += share + rest[:taken]
        rest = rest[taken:]
    items[:] = ordered + rest


POSTGRES = "postgresql://postgres@127.0.0.1:5432"
# Each test session runs its own Redis on a spare port: parallel runs never share queues, and
# the machine's Redis (a dev stack's broker) is never flushed.
REDIS_PORT = free_port()
REDIS_HOST = f"redis://127.0.0.1:{REDIS_PORT}"
# Redis database indexes used only by the tests: one with a worker consuming it, one without,
# where a test can look at what was enqueued.
WORKER_REDIS_DB = 13
QUIET_REDIS_DB = 12

WORKER_METRICS_PORT = free_port()

WEBHOOK_SECRET = "whsec_test_" + "a" * 32
OLD_WEBHOOK_SECRET = "whsec_test_" + "b" * 32
ADMIN_TOKEN = "admin-token-for-tests-" + "z" * 16
# The API client the tests create payments as (a merchant's back end, in production).
API_CLIENT_KEY = "api-client-key-for-tests-" + "k" * 16
OTHER_API_CLIENT_KEY = "api-client-key-for-tests-" + "o" * 16
METRICS_TOKEN = "metrics-token-for-tests-" + "m" * 16
# Named operators (ADMIN_TOKENS): one who may only read, one who may move money with either of
# two tokens (the second one being rotated in).
READER_TOKEN = "reader-token-for-tests-" + "r" * 16
TREASURER_TOKEN = "treasurer-token-for-tests-" + "t" * 16
TREASURER_NEXT_TOKEN = "treasurer-next-token-for-tests-" + "n" * 16
# base64 of "test-only-key-one-not-secret-32b" and "...-two-...": valid Fernet keys, no secret.
ENCRYPTION_KEY = "dGVzdC1vbmx5LWtleS1vbmUtbm90LXNlY3JldC0zMmI="
NEXT_ENCRYPTION_KEY = "dGVzdC1vbmx5LWtleS10d28tbm90LXNlY3JldC0zMmI="


@pytest.fixture(scope="session", autouse=True)
def session_redis() -> Iterator[Process]:
    proc = Process("redis-session", redis_server_args(REDIS_PORT), dict(os.environ))
    try:
        wait_until(lambda: port_open(REDIS_PORT), 20, "session Redis start")
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def fake_sentry() -> Iterator[FakeSentry]:
    sentry = FakeSentry()
    yield sentry
    sentry.stop()


@pytest.fixture(scope="session")
def stand_in_port() -> Iterator[int]:
    port = free_port()
    proc = Process(
        "localstripe",
        python_module("devtools.localstripe_server", "--port", str(port)),
        dict(os.environ),
    )
    try:
        wait_until(lambda: port_open(port), 20, "localstripe start")
        yield port
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def broker_env() -> Iterator[dict[str, str]]:
    """BROKER_URL for a run on RabbitMQ (``TEST_BROKER=rabbitmq``): a virtual host of its own.
    On Redis, nothing: the broker is the session Redis at REDIS_URL."""
    if not on_rabbitmq():
        yield {}
        return
    with rabbitmq_vhost(f"payments-test-{os.getpid()}") as url:
        yield {"BROKER_URL": url}


@pytest.fixture(scope="session")
def base_env(stand_in_port: int, broker_env: dict[str, str]) -> dict[str, str]:
    database = f"payments_test_{os.getpid()}"
    return {
        **broker_env,
        "STRIPE_SECRET_KEY": "sk_test_" + "x" * 24,
        "STRIPE_PUBLISHABLE_KEY": "pk_test_" + "x" * 24,
        "STRIPE_WEBHOOK_SECRET": f"{WEBHOOK_SECRET},{OLD_WEBHOOK_SECRET}",
        "STRIPE_API_BASE": f"http://127.0.0.1:{stand_in_port}",
        "REDIS_URL": f"{REDIS_HOST}/{WORKER_REDIS_DB}",
        "DATABASE_URL": f"{POSTGRES}/{database}",
        # The tests poll the API far faster than a client would; the limiter has its own tests.
        "RATE_LIMIT": "100000 per minute",
        "HANDLER_MAX_ATTEMPTS": "4",
        # Short, so the crashing-handler test sees leases expire within its patience. Not
        # shorter: a batch of first deliveries starts no transaction past half the soft limit
        # (this limit less 10 s), and what is left then runs alone, a second attempt each; 16 s
        # leaves a batch 3 s (2 s was overrun once the suite also started PostgreSQL clusters,
        # RabbitMQ nodes and gunicorns on cut-off hosts beside it).
        "HANDLER_TIME_LIMIT_SECONDS": "16",
        "HANDLER_MAX_PERMANENT_ATTEMPTS": "2",
        # Short backoff, so retries happen within a test's patience.
        "RETRY_BASE_SECONDS": "1",
        "HANDLER_MODULES": "tests.support.test_handlers",
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "ADMIN_TOKENS": (
            f"reader:read:{READER_TOKEN},treasurer:read+refund:{TREASURER_TOKEN},"
            f"treasurer:read+refund:{TREASURER_NEXT_TOKEN}"
        ),
        "API_CLIENT_KEYS": f"tests:{API_CLIENT_KEY},other:{OTHER_API_CLIENT_KEY}",
        "METRICS_TOKEN": METRICS_TOKEN,
        "STATUS_RATE_LIMIT": "100000 per minute",
        "ADMIN_RATE_LIMIT": "100000 per minute",
        "PROBE_RATE_LIMIT": "100000 per minute",
        "PAYMENTS_ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
        # Under `make test`, coverage's configuration (set by its subprocess patch): processes
        # started with this environment alone (the doctor, the Procfile lines) are measured too.
        **{k: v for k, v in os.environ.items() if k == "COVERAGE_PROCESS_CONFIG"},
    }


@pytest.fixture(scope="session")
def settings(base_env: dict[str, str]) -> Settings:
    return load_settings(base_env)


@pytest.fixture(scope="session")
def database(settings: Settings) -> Iterator[Engine]:
    from sqlalchemy import create_engine, text

    from shared.db import upgrade
    from tests.support.test_handlers import TABLES

    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(TABLES)
    yield engine
    engine.dispose()
    admin = create_engine(
        f"{POSTGRES}/postgres".replace("postgresql:", "postgresql+psycopg2:"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        name = settings.database_url.rsplit("/", 1)[1]
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sessions(database: Engine) -> sessionmaker[Session]:
    return make_session_factory(database)


@pytest.fixture(scope="session")
def stand_in(settings: Settings) -> StandIn:
    return StandIn(settings)


@pytest.fixture(scope="session")
def worker(
    base_env: dict[str, str], settings: Settings, database: Engine, fake_sentry: FakeSentry
) -> Iterator[Process]:
    redis.Redis.from_url(settings.redis_url).flushdb()
    metrics_dir = ARTIFACTS / f"prometheus-worker-{os.getpid()}"
    # prometheus-client opens its files there at import: the directory must exist first.
    metrics_dir.mkdir(parents=True, exist_ok=True)
    # PYTHONPATH: the worker imports the test-only handlers in tests/support.
    env = {
        **os.environ,
        **base_env,
        "PYTHONPATH": str(REPO_ROOT),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "WORKER_METRICS_PORT": str(WORKER_METRICS_PORT),
        "SENTRY_DSN": fake_sentry.dsn,
    }
    proc = Process(
        "celery-worker",
        # DEBUG on purpose: the secret-scanning test reads everything the worker logs.
        celery_worker_args(f"test-{os.getpid()}@%h", concurrency=2, loglevel="DEBUG"),
        env,
    )
    producer = make_producer(settings)
    try:
        wait_until(
            lambda: bool(producer.control.ping(timeout=0.5)) or not proc.alive(),
            60,
            "celery worker start",
            interval=0.5,
        )
        assert proc.alive(), proc.output()
        yield proc
    finally:
        proc.stop()
        producer.close()


@pytest.fixture(scope="session")
def settle(
    settings: Settings, sessions: sessionmaker[Session], worker: Process
) -> Iterator[Callable[[], None]]:
    """``settle()`` returns once the worker has finished every task queued before the call, and
    the tasks those queued in turn: what a test waits for before asserting that something did
    NOT happen (a second apply, a re-sent run), instead of sleeping and hoping.

    Each round sends a canary behind everything on each queue and waits until it has run: the
    queues are FIFO lists read by the one worker, so whatever was ahead of a canary has been
    taken before it. Then it waits until both queues are empty and nothing is unacknowledged:
    tasks are acknowledged only once they have returned (task_acks_late), including those held
    for a countdown, and a task queues its follow-ups before it returns. Two rounds: the second
    catches the follow-ups of the first (ingest, then the handler runs it queued).
    """
    client = redis.Redis.from_url(settings.redis_url)
    producer = make_producer(settings)
    queues = (EVENTS_QUEUE, HANDLERS_QUEUE)

    def in_flight() -> dict[str, int]:
        if on_rabbitmq():
            return rabbitmq_in_flight(settings.broker.rsplit("/", 1)[1])
        return redis_in_flight(client, queues)

    def canaries_seen(tokens: list[str]) -> bool:
        with sessions() as session:
            seen = session.execute(
                select(WorkerCanary.token).where(
                    WorkerCanary.token.in_(tokens), WorkerCanary.seen_at.is_not(None)
                )
            ).scalars()
            return set(seen) == set(tokens)

    def one_round(timeout: float) -> None:
        tokens = {queue: secrets.token_hex(16) for queue in queues}
        with sessions.begin() as session:
            session.add_all(WorkerCanary(token=t, queue=q) for q, t in tokens.items())
        for queue, token in tokens.items():
            producer.send_task(CANARY_TASK, args=[token], queue=queue)
        try:
            wait_until(lambda: canaries_seen(list(tokens.values())), timeout, "canaries run")
            wait_until(lambda: not any(in_flight().values()), timeout, "queues drained")
        except TimeoutError as exc:
            raise AssertionError(f"the worker did not settle: {in_flight()} ({exc})") from None
        finally:
            with sessions.begin() as session:
                session.execute(delete(WorkerCanary).where(WorkerCanary.token.in_(tokens.values())))

    def settle(timeout: float = 60) -> None:
        for _ in range(2):
            one_round(timeout)

    yield settle
    producer.close()
    client.close()


@pytest.fixture(scope="session")
def live_api(settings: Settings, worker: Process, stand_in: StandIn) -> Iterator[ServedApp]:
    """Our API on a real port, with the stand-in's webhooks pointed at it."""
    served = ServedApp(create_app(settings))
    stand_in.register_webhook(f"{served.url}/webhook")
    yield served
    served.stop()


@pytest.fixture
def api(live_api: ServedApp) -> Any:
    return ApiClient(live_api.url)


class ApiClient:
    def __init__(self, base: str) -> None:
        self.base = base

    def create_payment(self, body: dict[str, Any], **headers: str) -> requests.Response:
        headers = {"Authorization": f"Bearer {API_CLIENT_KEY}", **headers}
        return requests.post(
            f"{self.base}/api/create-payment", json=body, headers=headers, timeout=30
        )

    def payment(self, payment_intent_id: str) -> requests.Response:
        """The payment as the operators see it (an operator may read any payment)."""
        return requests.get(
            f"{self.base}/admin/payments/{payment_intent_id}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )

    def post_webhook(self, body: bytes, headers: dict[str, str]) -> requests.Response:
        return requests.post(f"{self.base}/webhook", data=body, headers=headers, timeout=10)

    def wait_for_decline(self, payment_intent_id: str, timeout: float = 20) -> dict[str, Any]:
        """The payment once a failure (its lastError) has been recorded."""

        def declined() -> bool:
            return self.payment(payment_intent_id).json().get("lastError") is not None

        wait_until(declined, timeout, f"decline of {payment_intent_id} recorded", interval=0.2)
        view: dict[str, Any] = self.payment(payment_intent_id).json()
        return view

    def wait_for_status(
        self, payment_intent_id: str, status: str, timeout: float = 20
    ) -> dict[str, Any]:
        seen: dict[str, Any] = {}

        def reached() -> bool:
            response = self.payment(payment_intent_id)
            if response.status_code == 200:
                seen.update(response.json())
            return seen.get("status") == status

        try:
            wait_until(reached, timeout, f"{payment_intent_id} reaching {status}", interval=0.2)
        except TimeoutError:
            raise AssertionError(
                f"{payment_intent_id} is {seen.get('status')}, not {status}"
            ) from None
        return seen


@pytest.fixture
def quiet_redis(settings: Settings) -> Iterator[redis.Redis]:
    """A Redis database no worker consumes, flushed around each test that uses it."""
    client = redis.Redis.from_url(f"{REDIS_HOST}/{QUIET_REDIS_DB}")
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def quiet_settings(settings: Settings) -> Settings:
    from dataclasses import replace

    return replace(settings, redis_url=f"{REDIS_HOST}/{QUIET_REDIS_DB}")
