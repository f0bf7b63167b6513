"""Issue 9, items 6-8: only authenticated queue bodies are ingested; events of the other mode or
of an account we do not serve are never applied; a key rotation never drops an event silently."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, cast

import pytest
import redis
import requests
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, text

from api import create_app
from devtools import stripe_events
from devtools.processes import (
    ARTIFACTS,
    REPO_ROOT,
    Process,
    celery_worker_args,
    declare_worker_queues,
    free_port,
    port_open,
    python_module,
    run_payments,
    wait_until,
)
from shared.config import load_settings
from shared.infra.broker import EVENTS_QUEUE, make_producer
from shared.infra.crypto import PayloadCipher
from shared.infra.stripe_gateway import make_stripe_client
from shared.ledger.event_rules import EventRefused, EventScope
from shared.ledger.receive.publisher import EventPublisher
from shared.ledger.recovery.reconcile import CHECKPOINT_NAME, StripeEventSource, reconcile
from shared.ledger.recovery.replay import replay_event
from shared.models import QuarantinedEvent, ReconcileCheckpoint, StripeEvent
from shared.task_names import INGEST_EVENT_TASK
from tests.conftest import (
    ENCRYPTION_KEY,
    NEXT_ENCRYPTION_KEY,
    REDIS_HOST,
    WEBHOOK_SECRET,
    WORKER_METRICS_PORT,
)
from tests.support.brokers import rabbitmq_vhost

SERVED_ACCOUNT = "acct_1ServedByUs0000"
OTHER_ACCOUNT = "acct_1NotOurs00000000"
# A Redis database of its own for the workers this module starts, apart from the session's.
OWN_WORKER_REDIS_DB = 11


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(requests.get(url, timeout=10).text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(url: str, name: str, **labels: str) -> float:
    return scrape(url).get((name, tuple(sorted(labels.items()))), 0.0)


def local_metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def a_payment_event(**fields: Any) -> dict[str, Any]:
    event = stripe_events.event(
        "payment_intent.succeeded", stripe_events.payment_intent(status="succeeded")
    )
    event.update(fields)
    return event


def recorded(sessions, event_id: str) -> bool:
    with sessions() as session:
        return session.get(StripeEvent, event_id) is not None


# --- the receiver -------------------------------------------------------------------------------


@pytest.fixture
def client(quiet_settings, quiet_redis) -> FlaskClient:
    served = replace(quiet_settings, connected_accounts=(SERVED_ACCOUNT,))
    return create_app(served).test_client()


def queued_count(quiet_redis: redis.Redis) -> int:
    return cast(int, quiet_redis.llen(EVENTS_QUEUE))


def test_receiver_refuses_an_event_of_the_other_mode_loudly(client, quiet_redis):
    before = local_metric("events_refused_total", reason="livemode_mismatch", stage="webhook")
    # Our key is a test key; a live event here means Stripe points at the wrong deployment.
    body, headers = stripe_events.signed(a_payment_event(livemode=True), WEBHOOK_SECRET)

    response = client.post("/webhook", data=body, headers=headers)

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "livemode_mismatch"
    assert queued_count(quiet_redis) == 0
    after = local_metric("events_refused_total", reason="livemode_mismatch", stage="webhook")
    assert after == before + 1


def test_receiver_acknowledges_but_drops_an_account_we_do_not_serve(client, quiet_redis):
    before = local_metric("events_refused_total", reason="account_not_served", stage="webhook")
    body, headers = stripe_events.signed(a_payment_event(account=OTHER_ACCOUNT), WEBHOOK_SECRET)

    response = client.post("/webhook", data=body, headers=headers)

    # 2xx, or Stripe would retry it for days; but never queued.
    assert response.status_code == 200
    assert response.get_json() == {"received": True, "ignored": "account_not_served"}
    assert queued_count(quiet_redis) == 0
    after = local_metric("events_refused_total", reason="account_not_served", stage="webhook")
    assert after == before + 1


def test_receiver_queues_the_platform_and_a_served_account(client, quiet_redis):
    for event in (a_payment_event(), a_payment_event(account=SERVED_ACCOUNT)):
        body, headers = stripe_events.signed(event, WEBHOOK_SECRET)
        response = client.post("/webhook", data=body, headers=headers)
        assert response.get_json() == {"received": True}
    assert queued_count(quiet_redis) == 2


# --- the worker (the session's: test key, no connected accounts) -------------------------------

SESSION_WORKER_METRICS = f"http://127.0.0.1:{WORKER_METRICS_PORT}/metrics"


def send_raw(settings, body: str) -> None:
    """A message as anyone who can reach Redis could queue it, bypassing the receiver."""
    producer = make_producer(settings)
    try:
        producer.send_task(INGEST_EVENT_TASK, args=[body, "webhook"])
    finally:
        producer.close()


def refused_by_worker(reason: str) -> float:
    return metric(SESSION_WORKER_METRICS, "events_refused_total", reason=reason, stage="ingest")


def await_refusal(reason: str, before: float) -> None:
    wait_until(
        lambda: refused_by_worker(reason) > before, 20, f"worker refusing ({reason})", interval=0.2
    )


def test_worker_refuses_a_plain_json_body(settings, sessions, worker):
    event = a_payment_event()
    before = refused_by_worker("unsigned")

    send_raw(settings, json.dumps(event))

    await_refusal("unsigned", before)
    assert not recorded(sessions, event["id"])


@pytest.mark.parametrize(
    ("fields", "reason"),
    [({"livemode": True}, "livemode_mismatch"), ({"account": OTHER_ACCOUNT}, "account_not_served")],
)
def test_worker_refuses_an_encrypted_event_out_of_scope(settings, sessions, worker, fields, reason):
    # Encrypted with the right key: a producer that skipped the receiver's checks.
    event = a_payment_event(**fields)
    before = refused_by_worker(reason)

    producer = make_producer(settings)
    EventPublisher(producer).publish(event, "webhook", PayloadCipher(settings.encryption_keys))
    producer.close()

    await_refusal(reason, before)
    assert not recorded(sessions, event["id"])


def test_publisher_queues_only_encrypted_events(quiet_settings, quiet_redis):
    event = a_payment_event()
    producer = make_producer(quiet_settings)
    EventPublisher(producer).publish(event, "webhook", PayloadCipher((ENCRYPTION_KEY,)))
    producer.close()
    raw = cast(list[bytes], quiet_redis.lrange(EVENTS_QUEUE, 0, -1))
    (message,) = [json.loads(m) for m in raw]
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert event["id"] not in args[0]
    assert PayloadCipher((ENCRYPTION_KEY,)).decrypt(args[0])["id"] == event["id"]


@pytest.mark.skipif(not shutil.which("rabbitmqctl"), reason="RabbitMQ is not installed")
def test_publisher_queues_only_encrypted_events_on_rabbitmq(quiet_settings):
    event = a_payment_event()
    with rabbitmq_vhost(f"payments-trust-{os.getpid()}") as url:
        producer = make_producer(replace(quiet_settings, broker_url=url))
        declare_worker_queues(producer)
        EventPublisher(producer).publish(event, "webhook", PayloadCipher((ENCRYPTION_KEY,)))
        with producer.connection_for_write() as connection:
            message = connection.default_channel.basic_get(EVENTS_QUEUE, no_ack=True)
        producer.close()
    assert message is not None
    assert event["id"] not in message.body
    args, _kwargs, _embed = json.loads(message.body)
    assert PayloadCipher((ENCRYPTION_KEY,)).decrypt(args[0])["id"] == event["id"]


# --- key rotation: workers of our own, with their own keys and retry bound ----------------------


@contextmanager
def own_worker(base_env, name: str, **env: str) -> Iterator[tuple[Process, str, dict[str, str]]]:
    """A worker on its own Redis database; yields it, its metrics URL and its environment."""
    metrics_dir = ARTIFACTS / f"prometheus-{name}-{os.getpid()}"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    full_env = {
        **os.environ,
        **base_env,
        "PYTHONPATH": str(REPO_ROOT),
        "REDIS_URL": f"{REDIS_HOST}/{OWN_WORKER_REDIS_DB}",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "WORKER_METRICS_PORT": str(port),
        **env,
    }
    node = f"{name}-{os.getpid()}@{socket.gethostname()}"
    proc = Process(name, celery_worker_args(node, concurrency=1), full_env)
    # Started once it answers a ping on its broker: it consumes then, where its metrics port
    # opens earlier in its start, and a test's patience would pay for the rest of the start.
    producer = make_producer(load_settings(full_env))
    try:
        wait_until(
            lambda: (
                (port_open(port) and bool(producer.control.ping([node], timeout=0.5)))
                or not proc.alive()
            ),
            60,
            f"{name} start",
            interval=0.2,
        )
        assert proc.alive(), proc.output()
        yield proc, f"http://127.0.0.1:{port}/metrics", full_env
    finally:
        proc.stop()
        producer.close()


def publish_under(settings, keys: tuple[str, ...], event: dict[str, Any]) -> None:
    own = replace(settings, redis_url=f"{REDIS_HOST}/{OWN_WORKER_REDIS_DB}")
    producer = make_producer(own)
    try:
        EventPublisher(producer).publish(event, "webhook", PayloadCipher(keys))
    finally:
        producer.close()


def quarantined(sessions) -> list[QuarantinedEvent]:
    with sessions() as session:
        return list(session.execute(select(QuarantinedEvent)).scalars())


@pytest.fixture
def empty_quarantine(sessions, database) -> Iterator[None]:
    redis.Redis.from_url(f"{REDIS_HOST}/{OWN_WORKER_REDIS_DB}").flushdb()
    with sessions.begin() as session:
        session.execute(text("DELETE FROM quarantined_events"))
    yield
    with sessions.begin() as session:
        session.execute(text("DELETE FROM quarantined_events"))


def test_body_under_a_key_the_worker_lacks_waits_for_it(
    base_env, settings, sessions, empty_quarantine
):
    # The web process got the new key first: the worker must not drop what it cannot read yet.
    event = a_payment_event()
    with own_worker(base_env, "worker-old-key") as (_proc, metrics_url, _env):
        publish_under(settings, (NEXT_ENCRYPTION_KEY, ENCRYPTION_KEY), event)
        wait_until(
            lambda: metric(metrics_url, "ingest_undecryptable_total") >= 1,
            20,
            "undecryptable body counted",
            interval=0.2,
        )
        assert not recorded(sessions, event["id"])
    # The workers now get the new key too (second in their list): the waiting message is read.
    keys = f"{ENCRYPTION_KEY},{NEXT_ENCRYPTION_KEY}"
    with own_worker(base_env, "worker-both-keys", PAYMENTS_ENCRYPTION_KEYS=keys):
        wait_until(lambda: recorded(sessions, event["id"]), 30, "event recorded", interval=0.2)
    assert quarantined(sessions) == []


def test_undecryptable_body_is_quarantined_after_the_bound_and_recoverable(
    base_env, settings, sessions, empty_quarantine
):
    event = a_payment_event()
    with own_worker(base_env, "worker-short-bound", UNDECRYPTABLE_RETRY_SECONDS="3") as (
        _proc,
        metrics_url,
        env,
    ):
        started = time.time()
        publish_under(settings, (NEXT_ENCRYPTION_KEY,), event)
        wait_until(lambda: len(quarantined(sessions)) == 1, 30, "body quarantined", interval=0.2)
        (row,) = quarantined(sessions)
        # Retried, not dropped on the first failure, and kept no longer than the bound asks.
        assert row.attempts >= 2
        assert row.quarantined_at.timestamp() - row.first_attempt_at.timestamp() >= 3
        assert row.first_attempt_at.timestamp() >= started - 1
        assert PayloadCipher((NEXT_ENCRYPTION_KEY,)).decrypt(row.body)["id"] == event["id"]
        assert metric(metrics_url, "ingest_undecryptable_total") >= 2
        assert metric(metrics_url, "ingest_quarantined_total") == 1
        assert not recorded(sessions, event["id"])

        listing = run_payments("events", "quarantine", "list", env=env)
        assert listing.returncode == 0, listing.stderr
        assert str(row.id) in listing.stdout
        # Without the old key the retry cannot read it, and says so; the row stays.
        failed = run_payments("events", "quarantine", "retry", str(row.id), env=env)
        assert failed.returncode != 0
        assert not recorded(sessions, event["id"])

        # The operator puts the key back (last) and retries: recorded, its handler runs.
        with_old = {**env, "PAYMENTS_ENCRYPTION_KEYS": f"{ENCRYPTION_KEY},{NEXT_ENCRYPTION_KEY}"}
        retried = run_payments("events", "quarantine", "retry", "--all", env=with_old)
        assert retried.returncode == 0, retried.stdout + retried.stderr
    assert recorded(sessions, event["id"])
    (row,) = quarantined(sessions)
    assert row.recovered_event_id == event["id"]
    assert row.recovered_at is not None


# --- reconcile and replay: events fetched from Stripe pass the same check ----------------------


@pytest.fixture(scope="module")
def event_standin(base_env) -> Iterator[str]:
    """A stand-in whose event list we can fill with Stripe-shaped events (bench.chaos.standin)."""
    port = free_port()
    proc = Process(
        "event-standin", python_module("bench.chaos.standin", "--port", str(port)), dict(os.environ)
    )
    try:
        wait_until(lambda: port_open(port), 20, "event stand-in start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def listed_at_stripe(base: str, created: int, **fields: Any) -> str:
    obj = stripe_events.payment_intent(status="succeeded")
    response = requests.post(
        f"{base}/_config/chaos/events",
        json={"type": "payment_intent.succeeded", "object": obj, "created": created, **fields},
        timeout=10,
    )
    response.raise_for_status()
    event_id: str = response.json()["id"]
    return event_id


@pytest.fixture
def own_checkpoint(sessions) -> Iterator[None]:
    """The reconciler's checkpoint as this test sets it; the session's is put back after."""
    with sessions() as session:
        saved = session.get(ReconcileCheckpoint, CHECKPOINT_NAME)
        saved_at = saved.last_event_created if saved else None
    with sessions.begin() as session:
        session.execute(text("DELETE FROM reconcile_checkpoints"))
    yield
    with sessions.begin() as session:
        session.execute(text("DELETE FROM reconcile_checkpoints"))
        if saved_at is not None:
            session.add(ReconcileCheckpoint(name=CHECKPOINT_NAME, last_event_created=saved_at))


def reconcile_from(settings, sessions, base: str, since: int):
    import datetime as dt

    stripe_settings = replace(settings, stripe_api_base=base)
    return reconcile(
        sessions,
        StripeEventSource(make_stripe_client(stripe_settings)),
        overlap_seconds=0,
        lookback_seconds=3600,
        cipher=PayloadCipher(settings.encryption_keys),
        scope=EventScope.of(settings),
        since=dt.datetime.fromtimestamp(since, tz=dt.UTC),
    )


def test_reconcile_records_only_events_in_scope(settings, sessions, event_standin, own_checkpoint):
    t0 = int(time.time())
    good = listed_at_stripe(event_standin, t0)
    live = listed_at_stripe(event_standin, t0 + 1, livemode=True)
    foreign = listed_at_stripe(event_standin, t0 + 2, account=OTHER_ACCOUNT)
    before = {
        r: local_metric("events_refused_total", reason=r, stage="reconcile")
        for r in ("livemode_mismatch", "account_not_served")
    }

    result = reconcile_from(settings, sessions, event_standin, t0)

    assert recorded(sessions, good)
    assert not recorded(sessions, live)
    assert not recorded(sessions, foreign)
    assert result.recovered >= 1
    for reason, count in before.items():
        assert local_metric("events_refused_total", reason=reason, stage="reconcile") == count + 1


def test_replay_refuses_to_fetch_an_event_out_of_scope(settings, sessions, event_standin):
    live = listed_at_stripe(event_standin, int(time.time()), livemode=True)
    source = StripeEventSource(make_stripe_client(replace(settings, stripe_api_base=event_standin)))
    before = local_metric("events_refused_total", reason="livemode_mismatch", stage="replay")

    with pytest.raises(EventRefused):
        replay_event(
            sessions,
            live,
            cipher=PayloadCipher(settings.encryption_keys),
            fetch_event=source.retrieve,
            scope=EventScope.of(settings),
        )

    assert not recorded(sessions, live)
    after = local_metric("events_refused_total", reason="livemode_mismatch", stage="replay")
    assert after == before + 1


def test_reconcile_never_moves_its_checkpoint_past_an_event_it_could_not_record(
    settings, sessions, event_standin, own_checkpoint
):
    t0 = int(time.time()) + 10
    first = listed_at_stripe(event_standin, t0)
    # One the ledger cannot hold (a type longer than its column): a failure, not a refusal.
    unrecordable = listed_at_stripe(event_standin, t0 + 1, type="x" * 300)
    after_it = listed_at_stripe(event_standin, t0 + 2)
    last_success = local_metric("reconcile_last_success_timestamp_seconds")

    reconcile_from(settings, sessions, event_standin, t0)

    assert recorded(sessions, first) and recorded(sessions, after_it)
    assert not recorded(sessions, unrecordable)
    with sessions() as session:
        checkpoint = session.get(ReconcileCheckpoint, CHECKPOINT_NAME)
        # Still before the failed event, so the next pass lists it again.
        assert checkpoint is not None
        assert checkpoint.last_event_created.timestamp() < t0 + 1
    # A pass that left an event behind is not a success.
    assert local_metric("reconcile_last_success_timestamp_seconds") == last_success

    started = time.time()
    with sessions.begin() as session:
        session.execute(text("DELETE FROM reconcile_checkpoints"))
    clean = listed_at_stripe(event_standin, t0 + 3)
    reconcile_from(settings, sessions, event_standin, t0 + 3)
    assert recorded(sessions, clean)
    assert local_metric("reconcile_last_success_timestamp_seconds") >= int(started)
