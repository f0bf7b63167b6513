"""Retries, dead letters, replay, the sweeper and the reconciler, on the real worker."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select, text

from devtools import stripe_events
from devtools.processes import REPO_ROOT, ServedApp, run_payments, venv_script, wait_until
from shared.infra.broker import make_producer
from shared.infra.crypto import PayloadCipher
from shared.models import HandlerRun, ReconcileCheckpoint, StripeEvent
from shared.task_names import SWEEP_TASK
from tests.conftest import ADMIN_TOKEN, WEBHOOK_SECRET


@pytest.fixture
def cli(base_env):
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT)}
        result = run_payments(*args, env=env)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    return run


@pytest.fixture
def poison(sessions):
    with sessions.begin() as session:
        session.execute(
            text("INSERT INTO test_poison VALUES ('tests.poisoned') ON CONFLICT DO NOTHING")
        )
    yield
    with sessions.begin() as session:
        session.execute(text("DELETE FROM test_poison"))


def remove_poison(sessions) -> None:
    with sessions.begin() as session:
        session.execute(text("DELETE FROM test_poison"))


def send(api, event_type: str, **fields) -> str:
    event = stripe_events.event(
        event_type, {"id": stripe_events.new_id("obj"), "object": "test", **fields}
    )
    response = api.post_webhook(*stripe_events.signed(event, WEBHOOK_SECRET))
    assert response.status_code == 200
    return event["id"]


def runs(sessions, event_id: str) -> dict[str, HandlerRun]:
    with sessions() as session:
        rows = session.execute(select(HandlerRun).where(HandlerRun.event_id == event_id)).scalars()
        return {run.handler: run for run in rows}


def wait_for(
    sessions, event_id: str, expected: dict[str, str], timeout: float = 30
) -> dict[str, HandlerRun]:
    def reached() -> bool:
        current = runs(sessions, event_id)
        return {name: run.status for name, run in current.items()} == expected

    try:
        wait_until(reached, timeout, f"runs of {event_id} reaching {expected}", interval=0.2)
    except TimeoutError:
        current = {
            name: (run.status, run.attempts) for name, run in runs(sessions, event_id).items()
        }
        raise AssertionError(f"runs of {event_id} are {current}, expected {expected}") from None
    return runs(sessions, event_id)


def effects(sessions, event_id: str) -> list[str]:
    with sessions() as session:
        return sorted(
            session.execute(
                text("SELECT handler FROM test_effects WHERE event_id = :e"), {"e": event_id}
            ).scalars()
        )


def calls(sessions, event_id: str, handler: str) -> int:
    with sessions() as session:
        return session.execute(
            text("SELECT count(*) FROM test_handler_calls WHERE event_id = :e AND handler = :h"),
            {"e": event_id, "h": handler},
        ).scalar_one()


def test_transient_failures_are_retried_until_they_succeed(api, sessions):
    event_id = send(api, "test.flaky", fail_times=2)

    done = wait_for(sessions, event_id, {"tests.flaky": "done", "tests.effect": "done"})

    assert done["tests.flaky"].attempts == 3
    assert calls(sessions, event_id, "tests.flaky") == 3
    # The other handler of the same event ran once, unaffected by its sibling's retries.
    assert done["tests.effect"].attempts == 1
    assert effects(sessions, event_id) == ["tests.effect", "tests.flaky"]


def test_transient_failures_dead_letter_after_max_attempts(api, sessions):
    event_id = send(api, "test.flaky", fail_times=99)

    dead = wait_for(sessions, event_id, {"tests.flaky": "dead", "tests.effect": "done"}, timeout=60)

    assert dead["tests.flaky"].attempts == 4  # HANDLER_MAX_ATTEMPTS in the test env
    assert "ConnectionError: simulated outage" in (dead["tests.flaky"].last_error or "")


@pytest.mark.long
def test_permanent_failure_is_dead_lettered_then_succeeds_on_replay(
    api, sessions, cli, poison, settle
):
    event_id = send(api, "test.poison")

    dead = wait_for(sessions, event_id, {"tests.poisoned": "dead", "tests.effect": "done"})

    run = dead["tests.poisoned"]
    assert run.last_error is not None
    assert run.attempts == 2  # HANDLER_MAX_PERMANENT_ATTEMPTS: a bug is not worth 4 tries
    assert "ValueError: cannot read this payload" in run.last_error
    assert "Traceback" in run.last_error
    assert "sk_test_4eC39HqLyjWDarjtT1zdp7dc" not in run.last_error
    assert "sk_test_[redacted]" in run.last_error
    assert effects(sessions, event_id) == ["tests.effect"]

    listed = cli("dlq", "list", "--handler", "tests.poisoned", "--type", "test.poison")
    assert f"{event_id}/tests.poisoned" in listed.stdout
    assert "ValueError: cannot read this payload" in listed.stdout
    assert "RUN" in listed.stdout.splitlines()[0]
    none = cli("dlq", "list", "--error", "no such error text anywhere")
    assert "no dead runs match" in none.stdout

    dry = cli("dlq", "replay", f"{event_id}/tests.poisoned", "--dry-run")
    assert "would be replayed" in dry.stdout
    # A replay resets the run (replays + 1) before its command returns, then queues it; once
    # the worker has settled, a task queued by mistake has run too (the poison is still there).
    settle()
    untouched = runs(sessions, event_id)["tests.poisoned"]
    assert (untouched.status, untouched.attempts, untouched.replays) == ("dead", 2, 0)
    assert calls(sessions, event_id, "tests.poisoned") == 2

    remove_poison(sessions)
    cli("dlq", "replay", "--all", "--handler", "tests.poisoned")

    replayed = wait_for(sessions, event_id, {"tests.poisoned": "done", "tests.effect": "done"})
    assert replayed["tests.poisoned"].replays == 1
    assert replayed["tests.effect"].replays == 0
    assert effects(sessions, event_id) == ["tests.effect", "tests.poisoned"]
    # The handler that had already succeeded was not run again by the replay.
    assert calls(sessions, event_id, "tests.effect") == 1


def test_dlq_replay_needs_ids_or_all(cli):
    result = cli("dlq", "replay", check=False)
    assert result.returncode == 2
    assert "--all" in result.stderr


def test_event_replay_reruns_only_what_is_named(api, sessions, cli):
    event_id = send(api, "test.flaky", fail_times=0)
    wait_for(sessions, event_id, {"tests.flaky": "done", "tests.effect": "done"})

    nothing = cli("events", "replay", event_id)
    assert "every handler already finished" in nothing.stdout

    cli("events", "replay", event_id, "--handler", "tests.flaky")

    wait_until(lambda: calls(sessions, event_id, "tests.flaky") == 2, 20, "forced re-run")
    rerun = wait_for(sessions, event_id, {"tests.flaky": "done", "tests.effect": "done"})
    assert rerun["tests.flaky"].replays == 1
    assert calls(sessions, event_id, "tests.effect") == 1


class LostWebhooks:
    """Where the stand-in's webhooks go while a test needs them lost. It records what arrives,
    so a test knows when an event has gone elsewhere for good: the stand-in posts each event
    once, a second after it happened, to the webhook registered then."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str | None]] = []
        self._served = ServedApp(self)
        self.url = f"{self._served.url}/webhook"

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        event = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        self.received.append((event["type"], event["data"]["object"].get("id")))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"received": true}']

    def wait_for(self, event_type: str, object_ids: list[str], timeout: float = 20) -> None:
        wanted = {(event_type, object_id) for object_id in object_ids}
        wait_until(lambda: wanted <= set(self.received), timeout, f"{wanted} lost", interval=0.1)

    def stop(self) -> None:
        self._served.stop()


@contextlib.contextmanager
def webhooks_lost(stand_in, api) -> Iterator[LostWebhooks]:
    lost = LostWebhooks()
    stand_in.register_webhook(lost.url)
    try:
        yield lost
    finally:
        stand_in.register_webhook(f"{api.base}/webhook")
        lost.stop()


def test_event_replay_fetches_an_event_we_never_received(api, stand_in, sessions, cli):
    # Confirm a payment while the stand-in's webhooks go nowhere, so its event never reaches us.
    intent_id = api.create_payment({"amount": 1500, "currency": "usd"}).json()["paymentIntentId"]
    with webhooks_lost(stand_in, api) as lost:
        stand_in.pay(intent_id, "4242424242424242")
        lost.wait_for("payment_intent.succeeded", [intent_id])
    event_id = next(
        e["id"]
        for e in stand_in.events()
        if e["data"]["object"].get("id") == intent_id and e["type"] == "payment_intent.succeeded"
    )

    cli("events", "replay", event_id)

    api.wait_for_status(intent_id, "succeeded")
    with sessions() as session:
        assert session.get(StripeEvent, event_id).source == "replay"


def test_sweeper_resends_runs_whose_message_was_lost(sessions, settings, worker, settle):
    # A recorded event whose handler message never reached the broker.
    event = stripe_events.event("test.flaky", {"id": "obj_swept", "object": "test"})
    with sessions.begin() as session:
        from shared.ledger.event_rows import record_event

        assert record_event(session, event, "webhook", PayloadCipher(settings.encryption_keys))
        session.execute(
            text(
                "UPDATE handler_runs SET updated_at = now() - interval '1 hour' WHERE event_id = :e"
            ),
            {"e": event["id"]},
        )
    # One run whose retry is still ahead: the sweeper must leave it alone.
    with sessions.begin() as session:
        session.execute(
            text(
                "UPDATE handler_runs SET next_attempt_at = now() + interval '1 hour' "
                "WHERE event_id = :e AND handler = 'tests.effect'"
            ),
            {"e": event["id"]},
        )

    producer = make_producer(settings)
    producer.send_task(SWEEP_TASK)
    producer.close()

    wait_for(sessions, event["id"], {"tests.flaky": "done", "tests.effect": "pending"})
    # tests.flaky is done, so the sweep committed: a run it re-sends is marked touched then.
    # Once the worker has settled, a task it sent for tests.effect would have run too.
    settle()
    left_alone = runs(sessions, event["id"])["tests.effect"]
    assert (left_alone.status, left_alone.attempts) == ("pending", 0)
    # Still touched "an hour ago": the sweep did not pick it.
    assert left_alone.updated_at < dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    assert calls(sessions, event["id"], "tests.effect") == 0


def test_reconcile_recovers_events_whose_webhooks_were_lost(api, stand_in, sessions, cli):
    intents = [
        api.create_payment({"amount": 2000 + i, "currency": "usd"}).json()["paymentIntentId"]
        for i in range(3)
    ]
    with webhooks_lost(stand_in, api) as lost:
        for intent_id in intents:
            stand_in.pay(intent_id, "4242424242424242")
        lost.wait_for("payment_intent.succeeded", intents)
    for intent_id in intents:
        assert api.payment(intent_id).json()["status"] == "requires_payment_method"

    first = cli("reconcile")

    for intent_id in intents:
        api.wait_for_status(intent_id, "succeeded")
    recovered = int(first.stdout.splitlines()[1].split()[-2])
    assert recovered >= 3
    with sessions() as session:
        sources = session.execute(
            select(StripeEvent.source).where(StripeEvent.type == "payment_intent.succeeded")
        ).scalars()
        assert "reconcile" in set(sources)
        assert session.get(ReconcileCheckpoint, "stripe-events") is not None

    second = cli("reconcile")
    assert int(second.stdout.splitlines()[1].split()[-2]) == 0


def test_beat_schedules_the_sweeper(base_env, settings, sessions, worker):
    event = stripe_events.event("test.flaky", {"id": "obj_beat", "object": "test"})
    with sessions.begin() as session:
        from shared.ledger.event_rows import record_event

        record_event(session, event, "webhook", PayloadCipher(settings.encryption_keys))
        session.execute(
            text(
                "UPDATE handler_runs SET updated_at = now() - interval '1 hour' WHERE event_id = :e"
            ),
            {"e": event["id"]},
        )
    from devtools.processes import ARTIFACTS, Process

    env = {**os.environ, **base_env, "SWEEP_INTERVAL_SECONDS": "1", "PYTHONPATH": str(REPO_ROOT)}
    beat = Process(
        "celery-beat",
        [
            venv_script("celery"),
            "-A",
            "workers.celery_app",
            "beat",
            "--schedule",
            str(ARTIFACTS / f"celerybeat-{os.getpid()}"),
            "--loglevel",
            "INFO",
        ],
        env,
    )
    try:
        wait_for(sessions, event["id"], {"tests.flaky": "done", "tests.effect": "done"}, timeout=40)
    finally:
        beat.stop()


def admin(api, method: str, path: str, token: str | None = ADMIN_TOKEN, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(
        method, f"{api.base}/admin{path}", headers=headers, timeout=30, **kwargs
    )


def test_admin_api_requires_the_bearer_token(api):
    assert admin(api, "GET", "/dlq", token=None).status_code == 401
    wrong = admin(api, "GET", "/dlq", token="not-the-token")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthorized"
    assert admin(api, "GET", "/dlq").status_code == 200


def test_admin_api_is_off_without_a_token(settings, database):
    from dataclasses import replace

    from api import create_app

    client = create_app(replace(settings, operators=())).test_client()
    response = client.get("/admin/dlq", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 404


def test_admin_api_lists_and_replays_dead_runs(api, sessions, poison):
    event_id = send(api, "test.poison")
    wait_for(sessions, event_id, {"tests.poisoned": "dead", "tests.effect": "done"})

    listed = admin(api, "GET", "/dlq", params={"handler": "tests.poisoned", "type": "test.poison"})
    assert f"{event_id}/tests.poisoned" in [r["id"] for r in listed.json()["runs"]]
    bad = admin(api, "GET", "/dlq", params={"since": "yesterday"})
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "since"

    dry = admin(api, "POST", "/dlq/replay", json={"ids": [event_id], "dryRun": True})
    assert dry.json()["replayed"] == 0
    assert [r["id"] for r in dry.json()["runs"]] == [f"{event_id}/tests.poisoned"]

    remove_poison(sessions)
    replay = admin(api, "POST", "/dlq/replay", json={"ids": [f"{event_id}/tests.poisoned"]})
    assert replay.json()["replayed"] == 1
    wait_for(sessions, event_id, {"tests.poisoned": "done", "tests.effect": "done"})

    forced = admin(
        api,
        "POST",
        f"/admin/events/{event_id}/replay".replace("/admin", ""),
        json={"handler": "tests.effect"},
    )
    assert forced.json()["enqueued"] == ["tests.effect"]
    wait_until(lambda: calls(sessions, event_id, "tests.effect") == 2, 20, "forced re-run")
    unknown = admin(api, "POST", f"/events/{event_id}/replay", json={"handler": "nope"})
    assert unknown.status_code == 400


@pytest.mark.long
def test_handler_that_kills_its_worker_ends_dead_not_redelivered_for_ever(api, sessions, settings):
    event_id = send(api, "test.crash")

    # Each attempt SIGKILLs the prefork child; Celery redelivers the message (acks_late,
    # reject_on_worker_lost). Attempts are counted when claimed, so the run runs out of them.
    # Attempts 2+ wait for the lease to expire and the sweeper to re-send: give it time.
    dead = wait_for(sessions, event_id, {"tests.crashing": "dead"}, timeout=120)

    assert dead["tests.crashing"].attempts == settings.handler_max_attempts
    assert calls(sessions, event_id, "tests.crashing") == settings.handler_max_attempts
    assert "worker died" in (dead["tests.crashing"].last_error or "")
