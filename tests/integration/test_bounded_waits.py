"""Every wait bounded (issue 25): the web process on a host cut off from PostgreSQL, then from
the broker, answers 503 within its bound instead of hanging for the kernel's TCP retries, and
works again once the link is back, with no restart.

The host is a network namespace (devtools.netns) with two links: the test's own PostgreSQL
listens on the first link's gateway, its own Redis (broker and rate-limit store) on the
second's. Cutting one link makes that service's packets vanish both ways, as in a partition or
a host crash: no RST, no FIN. The web process is the Procfile's `web` line (gunicorn, gevent
workers) run on the host; the test's client reaches it through the link that is not cut.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy

from devtools import stripe_events
from devtools.netns import Host
from devtools.processes import (
    ARTIFACTS,
    Process,
    celery_worker_args,
    free_port,
    procfile_command,
    venv_script,
    wait_until,
)
from devtools.rabbitmq import RABBITMQ_BIN
from shared.config import load_settings
from shared.db import upgrade
from shared.infra.broker import make_producer
from shared.infra.crypto import PayloadCipher
from shared.ledger.receive.publisher import EventPublisher
from tests.conftest import API_CLIENT_KEY, ENCRYPTION_KEY, WEBHOOK_SECRET
from tests.integration.test_multi_host import TABLES as HANDLER_TABLES
from tests.integration.test_multi_host import Brokers, HostsPostgres, process_env

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.long,
]

DB_LINK, BROKER_LINK = 0, 1
# The promise: a request whose dependency stopped answering is answered within this. Today's
# bounds: a pooled connection's ping (statement bound 5 s + 2 s margin), then a new connection's
# connect timeout (5 s); the webhook's publish patience (5 s) on a dead Redis socket.
ANSWER_BOUND_SECONDS = 15.0
# What the client waits before calling it a hang (the unbounded wait is about 2 minutes).
CLIENT_PATIENCE_SECONDS = 60.0


@dataclass
class Web:
    host: Host
    port: int
    process: Process

    def url(self, path: str, via: int) -> str:
        return f"http://{self.host.links[via].address}:{self.port}{path}"

    def timed(self, method: str, path: str, via: int, **kwargs: Any) -> tuple[int, float]:
        """The answer's status and how long it took; 0 if none came within the patience."""
        started = time.monotonic()
        try:
            response = requests.request(
                method, self.url(path, via), timeout=CLIENT_PATIENCE_SECONDS, **kwargs
            )
        except requests.Timeout:
            return 0, time.monotonic() - started
        return response.status_code, time.monotonic() - started


def _settings(postgres: HostsPostgres, host: Host) -> dict[str, str]:
    return {
        "DATABASE_URL": postgres.url_via(host.links[DB_LINK].gateway),
        "STRIPE_SECRET_KEY": "sk_test_" + "x" * 24,
        "STRIPE_PUBLISHABLE_KEY": "pk_test_" + "x" * 24,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        # Never reached: the database claim comes before any Stripe call.
        "STRIPE_API_BASE": "http://127.0.0.1:9",
        "PAYMENTS_ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "API_CLIENT_KEYS": f"tests:{API_CLIENT_KEY}",
        "LOG_LEVEL": "INFO",
    }


@dataclass
class Services:
    """The host, and the test's own PostgreSQL and Redis, each reached through its own link."""

    host: Host
    workdir: Path
    env: dict[str, str]
    # The database as the test itself reaches it, on loopback.
    local_database_url: str
    # What a process in the root namespace (another host) is given: both services on loopback.
    root_env: dict[str, str]


@contextlib.contextmanager
def services_for(label: str, broker: str = "redis") -> Iterator[Services]:
    with contextlib.ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="payments-bounded-waits-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        host = Host.create(label, links=2)
        cleanup.callback(host.remove)
        postgres = HostsPostgres(workdir)
        postgres.start_for([host.links[DB_LINK]])
        cleanup.callback(postgres.stop)
        local_database_url = postgres.url.replace("postgresql://", "postgresql+psycopg2://", 1)
        upgrade(local_database_url)
        brokers = Brokers(broker, workdir, [host.links[BROKER_LINK]])
        cleanup.callback(brokers.stop)
        brokers.start()
        env = process_env(
            {**_settings(postgres, host), **brokers.env(host.links[BROKER_LINK].gateway)}
        )
        env["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / "metrics")
        (workdir / "metrics").mkdir()
        root_env = {
            **env,
            **brokers.env("127.0.0.1"),
            "DATABASE_URL": postgres.url_via("127.0.0.1"),
        }
        yield Services(host, workdir, env, local_database_url, root_env)


@contextlib.contextmanager
def web_on_a_host(broker: str = "redis") -> Iterator[Web]:
    with services_for("web", broker) as services:
        port = free_port()
        args = procfile_command("web", port)
        args[args.index("--bind") + 1] = f"0.0.0.0:{port}"
        process = services.host.run(f"bounded-waits-web-{os.getpid()}", args, services.env)
        web = Web(services.host, port, process)
        wait_until(lambda: _answers(web), 60, "the web process answering")
        yield web


def _answers(web: Web) -> bool:
    assert web.process.alive(), web.process.output()[-5000:]
    with contextlib.suppress(requests.RequestException):
        return requests.get(web.url("/healthz", DB_LINK), timeout=2).status_code == 200
    return False


BROKERS = [
    "redis",
    pytest.param(
        "rabbitmq",
        marks=pytest.mark.skipif(not RABBITMQ_BIN.exists(), reason="RabbitMQ is not installed"),
    ),
]


def record(what: str, status: int, seconds: float) -> None:
    """Each measured wait, for the closing note and for whoever reads a failure:
    test-artifacts/[gw<n>/]bounded-waits.jsonl."""
    line = {"what": what, "status": status, "seconds": round(seconds, 2)}
    with (ARTIFACTS / "bounded-waits.jsonl").open("a") as out:
        out.write(json.dumps(line) + "\n")


AUTH = {"Authorization": f"Bearer {API_CLIENT_KEY}"}


def _status_read(web: Web, via: int) -> tuple[int, float]:
    return web.timed("GET", "/api/payments/pi_never_created", via, headers=AUTH)


def _create_payment(web: Web, via: int) -> tuple[int, float]:
    body = {"amount": 1000, "currency": "usd"}
    headers = {**AUTH, "Idempotency-Key": f"bounded-{time.monotonic_ns()}"}
    return web.timed("POST", "/api/create-payment", via, json=body, headers=headers)


def _webhook(web: Web, via: int) -> tuple[int, float]:
    event = stripe_events.event(
        "payment_intent.processing", stripe_events.payment_intent(status="processing")
    )
    body, headers = stripe_events.signed(event, WEBHOOK_SECRET)
    return web.timed("POST", "/webhook", via, data=body, headers=headers)


@pytest.mark.parametrize("broker", BROKERS)
def test_the_web_answers_503_within_its_bound_when_the_database_or_the_broker_stops(broker):
    with web_on_a_host(broker) as web:
        _database_cut(web)
        _broker_cut(web, broker)


def _database_cut(web: Web) -> None:
    # Warm: pooled connections in every gevent worker that answers.
    assert _status_read(web, BROKER_LINK)[0] == 404
    web.host.cut(DB_LINK)
    try:
        read = _status_read(web, BROKER_LINK)
        create = _create_payment(web, BROKER_LINK)
    finally:
        web.host.restore(DB_LINK)
    timings = {"status read": read, "create-payment": create}
    for what, (status, seconds) in timings.items():
        record(f"web, database cut: {what}", status, seconds)
        assert status == 503 and seconds < ANSWER_BOUND_SECONDS, (what, status, seconds)
    # Back with no restart: the pool drops what the cut killed and connects again.
    wait_until(lambda: _status_read(web, BROKER_LINK)[0] == 404, 30, "reads answering again")


def _broker_cut(web: Web, broker: str) -> None:
    assert _webhook(web, DB_LINK)[0] == 200
    web.host.cut(BROKER_LINK)
    try:
        status, seconds = _webhook(web, DB_LINK)
    finally:
        web.host.restore(BROKER_LINK)
    record(f"web, {broker} cut: /webhook", status, seconds)
    assert status == 503 and seconds < ANSWER_BOUND_SECONDS, (status, seconds)
    wait_until(lambda: _webhook(web, DB_LINK)[0] == 200, 30, "webhooks queued again")


# The worker's promise: out of reach of its broker for BROKER_UNREACHABLE_EXIT_SECONDS (10 here),
# it exits within that plus one probe interval and one probe's timeout (5 s each).
WORKER_EXIT_BOUND_SECONDS = 25.0


@pytest.mark.parametrize("broker", BROKERS)
def test_a_worker_cut_off_from_its_broker_exits_for_its_supervisor_within_the_bound(broker):
    with services_for("worker", broker) as services:
        args = celery_worker_args(f"bounded-{os.getpid()}@worker", concurrency=1)
        _exits_when_cut_off(services, broker, "worker", args, " ready.")


def test_beat_cut_off_from_its_broker_exits_for_its_supervisor_within_the_bound():
    with services_for("beat") as services:
        schedule = str(services.workdir / "celerybeat-schedule")
        args = [venv_script("celery"), "-A", "workers.celery_app", "beat", "-s", schedule]
        _exits_when_cut_off(services, "redis", "beat", [*args, "--loglevel", "INFO"], "Starting")


def _exits_when_cut_off(
    services: Services, broker: str, what: str, args: list[str], started_line: str
) -> None:
    env = {**services.env, "BROKER_UNREACHABLE_EXIT_SECONDS": "10"}
    process = services.host.run(f"bounded-waits-{what}-{os.getpid()}", args, env)
    wait_until(
        lambda: started_line in process.output() or not process.alive(), 60, f"{what} started"
    )
    assert process.alive(), process.output()[-5000:]
    services.host.cut(BROKER_LINK)
    started = time.monotonic()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.proc.wait(WORKER_EXIT_BOUND_SECONDS + 60)
    took = time.monotonic() - started
    services.host.restore(BROKER_LINK)
    record(f"{what}, {broker} cut: exit", process.proc.returncode or 0, took)
    assert process.proc.returncode == 69, (process.proc.returncode, process.output()[-3000:])
    assert took < WORKER_EXIT_BOUND_SECONDS, took
    assert "broker unreachable for" in process.output()


# PostgreSQL's promise: the locks of a client that vanished mid-transaction are freed within
# the server's keepalive bound (10 s idle + 3 x 5 s probes), well before the idle-in-transaction
# timeout; without keepalives Linux keeps such a connection for about two hours.
LOCKS_FREED_BOUND_SECONDS = 40.0

HOLD_A_LOCK = """
import sys, time
from sqlalchemy import text
from shared.db import make_engine
engine = make_engine(sys.argv[1])
with engine.begin() as conn:
    conn.execute(text("SELECT id FROM checkpoints_for_test WHERE id = 1 FOR UPDATE"))
    print("locked", flush=True)
    time.sleep(3600)
"""


def test_the_locks_of_a_host_cut_off_mid_transaction_are_freed_within_the_bound():
    with services_for("holder") as services:
        url = services.env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://", 1)
        local = sqlalchemy.create_engine(services.local_database_url)
        with local.begin() as conn:
            conn.execute(sqlalchemy.text("CREATE TABLE checkpoints_for_test (id int PRIMARY KEY)"))
            conn.execute(sqlalchemy.text("INSERT INTO checkpoints_for_test VALUES (1)"))
        args = [sys.executable, "-c", HOLD_A_LOCK, url]
        holder = services.host.run(f"bounded-waits-holder-{os.getpid()}", args, services.env)
        wait_until(lambda: "locked" in holder.output() or not holder.alive(), 30, "the lock held")
        assert holder.alive(), holder.output()[-3000:]
        services.host.cut(DB_LINK)
        started = time.monotonic()
        try:
            with local.begin() as conn:
                conn.execute(sqlalchemy.text("SET lock_timeout = '90s'"))
                conn.execute(
                    sqlalchemy.text("SELECT id FROM checkpoints_for_test WHERE id = 1 FOR UPDATE")
                )
            took = time.monotonic() - started
        finally:
            services.host.restore(DB_LINK)
            local.dispose()
        record("postgres, client host cut mid-transaction: locks freed", 0, took)
        assert took < LOCKS_FREED_BOUND_SECONDS, took


# An operator's command on a host cut off from the database stops with an error within the
# connect timeout (5 s) and the wait for the answer, instead of hanging.
CLI_BOUND_SECONDS = 15.0


def test_an_operators_command_on_a_host_cut_off_the_database_ends_within_the_bound():
    with services_for("operator") as services:
        args = [venv_script("payments"), "dlq", "list"]
        assert (
            subprocess.run(
                ["ip", "netns", "exec", services.host.namespace, *args],
                env=services.env,
                capture_output=True,
                timeout=60,
            ).returncode
            == 0
        )
        services.host.cut(DB_LINK)
        started = time.monotonic()
        try:
            done = subprocess.run(
                ["ip", "netns", "exec", services.host.namespace, *args],
                env=services.env,
                capture_output=True,
                text=True,
                timeout=CLI_BOUND_SECONDS + 60,
            )
        finally:
            services.host.restore(DB_LINK)
        took = time.monotonic() - started
        record("cli, database cut: payments dlq list", done.returncode, took)
        assert done.returncode != 0 and took < CLI_BOUND_SECONDS, (done.returncode, took)


# A worker cut off from the database, its broker still answering, gives its work up for another
# host: the keepalives of its sessions (10 s idle + 3 x 5 s probes; 25 s for what is sent and
# never acknowledged) end its wait for an answer, the attempt fails as transient, its retry goes
# back to the broker, and a worker that reaches the database does it. PostgreSQL ends the cut
# host's transaction on the same keepalive bound, freeing the rows the other worker needs.
WORK_HANDED_OVER_BOUND_SECONDS = 45.0
HANDED_OVER_EVENTS = 6
WORKER_SETTINGS = {
    "HANDLER_MODULES": "tests.support.test_handlers",
    "RETRY_BASE_SECONDS": "1",
    "RECONCILE_INTERVAL_SECONDS": "3600",
}


@pytest.mark.parametrize("broker", BROKERS)
def test_a_worker_cut_off_from_the_database_hands_its_work_to_another_host_within_the_bound(
    broker,
):
    with services_for("dbcut", broker) as services, contextlib.ExitStack() as cleanup:
        ledger = _Ledger(sqlalchemy.create_engine(services.local_database_url), services)
        cleanup.callback(ledger.engine.dispose)
        worker_a = _worker(services.host.run, "a", services.env)
        cleanup.callback(worker_a.stop)
        publish = _publisher(services.root_env, cleanup)
        with ledger.effects_held():
            ids = publish(HANDED_OVER_EVENTS)
            wait_until(
                lambda: ledger.blocked_on_a_lock() > 0 or not worker_a.alive(),
                30,
                "the cut host's worker inside an event's transaction",
            )
            services.host.cut(DB_LINK)
            cut_at = time.monotonic()
        worker_b = _worker(Process, "b", services.root_env)
        cleanup.callback(worker_b.stop)
        try:
            wait_until(
                lambda: ledger.done(ids) == set(ids),
                WORK_HANDED_OVER_BOUND_SECONDS + 60,
                "the cut host's work done by the other host",
            )
            took = time.monotonic() - cut_at
        finally:
            services.host.restore(DB_LINK)
        record(f"worker, database cut ({broker}): its work done by another host", 0, took)
        assert took < WORK_HANDED_OVER_BOUND_SECONDS, (took, worker_a.output()[-5000:])
        assert ledger.applied_by(ids).get("b", 0) > 0, ledger.applied_by(ids)

        # Back with no restart: with the other host gone, only the cut one can do new events.
        worker_b.stop()
        fresh = publish(4)
        wait_until(lambda: ledger.done(fresh) == set(fresh), 60, "the cut host working again")
        assert ledger.applied_by(fresh) == {"a": 2 * len(fresh)}
        assert ledger.effects_applied_more_than_once() == []
        assert worker_a.alive(), worker_a.output()[-5000:]


def _worker(run: Any, label: str, env: dict[str, str]) -> Process:
    name = f"bounded-{label}-{os.getpid()}@{label}"
    args = celery_worker_args(name, concurrency=2)
    worker: Process = run(
        f"bounded-waits-worker-{label}-{os.getpid()}", args, {**env, **WORKER_SETTINGS}
    )
    wait_until(lambda: " ready." in worker.output() or not worker.alive(), 60, f"worker {label}")
    assert worker.alive(), worker.output()[-5000:]
    return worker


def _publisher(env: dict[str, str], cleanup: contextlib.ExitStack) -> Any:
    """Publishes ``count`` test.flaky events as the webhook receiver queues them."""
    settings = load_settings(env)
    producer = make_producer(settings)
    cleanup.callback(producer.close)
    publisher = EventPublisher(producer)
    cipher = PayloadCipher(settings.encryption_keys)

    def publish(count: int) -> list[str]:
        events = [
            stripe_events.event("test.flaky", {"id": stripe_events.new_id("obj"), "object": "test"})
            for _ in range(count)
        ]
        for event in events:
            publisher.publish(event, "webhook", cipher)
        return [event["id"] for event in events]

    return publish


@dataclass
class _Ledger:
    """The test's handlers' effects, read on loopback: who applied what (by client address)."""

    engine: sqlalchemy.Engine
    services: Services

    def __post_init__(self) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(HANDLER_TABLES)

    @contextlib.contextmanager
    def effects_held(self) -> Iterator[None]:
        """While this holds, every handler waits at its effect, inside its event's transaction."""
        with self.engine.connect() as conn:
            conn.execute(sqlalchemy.text("LOCK TABLE test_effects IN SHARE MODE"))
            yield
            conn.rollback()

    def _rows(self, query: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sqlalchemy.text(query), params).all())

    def blocked_on_a_lock(self) -> int:
        address = self.services.host.links[DB_LINK].address
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE host(client_addr) = :address AND wait_event_type = 'Lock'"
        )
        return int(self._rows(query, address=address)[0][0])

    def done(self, ids: list[str]) -> set[str]:
        query = (
            "SELECT event_id FROM handler_runs WHERE event_id = ANY(:ids) "
            "GROUP BY event_id HAVING bool_and(status = 'done') AND count(*) = 2"
        )
        return {row[0] for row in self._rows(query, ids=ids)}

    def applied_by(self, ids: list[str]) -> dict[str, int]:
        query = (
            "SELECT host(client_addr), count(*) FROM test_effects "
            "WHERE event_id = ANY(:ids) GROUP BY 1"
        )
        cut_host = self.services.host.links[DB_LINK].address
        labels = {cut_host: "a", "127.0.0.1": "b"}
        return {labels.get(address, address): n for address, n in self._rows(query, ids=ids)}

    def effects_applied_more_than_once(self) -> list[Any]:
        query = "SELECT event_id, handler FROM test_effects GROUP BY 1, 2 HAVING count(*) > 1"
        return self._rows(query)


PROBE_THROUGH_A_CUT_NODE = """
import sys, time
from celery import Celery
from shared.infra.broker_watchdog import broker_probe
started = time.monotonic()
broker_probe(Celery(broker=sys.argv[1], set_as_current=False))()
print(f"reached in {time.monotonic() - started:.1f} s", flush=True)
"""


def test_the_watchdog_reaches_a_broker_whose_first_node_is_cut_off():
    """A worker fails over to the nodes that answer, so its watchdog must too: a first node that
    swallows packets must not make it call the broker unreachable and end a working worker."""
    with services_for("failover") as services:
        redis_url = services.env["REDIS_URL"]
        port = redis_url.rsplit(":", 1)[1].split("/")[0]
        silent = f"redis://{services.host.links[DB_LINK].gateway}:{port}/0"
        services.host.cut(DB_LINK)
        try:
            probe = [sys.executable, "-c", PROBE_THROUGH_A_CUT_NODE, f"{silent};{redis_url}"]
            done = subprocess.run(
                ["ip", "netns", "exec", services.host.namespace, *probe],
                env=services.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            services.host.restore(DB_LINK)
        assert done.returncode == 0 and "reached" in done.stdout, done.stderr[-2000:]


def test_a_worker_started_during_a_cut_exits_for_its_supervisor_within_the_bound():
    """The supervisor's restart may come while the broker is still out of reach: the restarted
    worker, which never gets ready, must end within the bound too instead of retrying for ever."""
    with services_for("restarted") as services:
        env = {**services.env, "BROKER_UNREACHABLE_EXIT_SECONDS": "10"}
        services.host.cut(BROKER_LINK)
        args = celery_worker_args(f"restarted-{os.getpid()}@worker", concurrency=1)
        started = time.monotonic()
        worker = services.host.run(f"bounded-waits-restarted-{os.getpid()}", args, env)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.proc.wait(WORKER_EXIT_BOUND_SECONDS + 60)
        took = time.monotonic() - started
        services.host.restore(BROKER_LINK)
        record("worker started during a redis cut: exit", worker.proc.returncode or 0, took)
        assert worker.proc.returncode == 69, (worker.proc.returncode, worker.output()[-3000:])
        # Its start (imports, the database) comes out of the same bound here.
        assert took < WORKER_EXIT_BOUND_SECONDS + 10, took
