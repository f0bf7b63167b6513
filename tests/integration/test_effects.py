"""Handlers' side effects through the outbox, on the real worker, database, an SMTP server and an
HTTP endpoint: an effect commits with its run or not at all, is delivered once per (event,
handler, name) with a key that never changes, is retried, dead-lettered and replayed, and a
relay that dies mid-send delivers it again with the same key."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, select, update

from devtools import stripe_events
from devtools.processes import REPO_ROOT, run_payments, wait_until
from devtools.receivers import http_receiver, smtp_sink
from shared.db import make_session_factory, transaction
from shared.effects.kinds import EffectSettings, kinds_with_builtins
from shared.effects.relay import claim_one, relay_due, replay_dead_effects
from shared.infra.crypto import PayloadCipher
from shared.ledger.retry import RetryPolicy
from shared.models import OutboxEffect
from tests.conftest import WEBHOOK_SECRET

POLICY = RetryPolicy(
    max_transient_attempts=3, max_permanent_attempts=1, base_seconds=0, cap_seconds=0
)


@pytest.fixture
def ledger(database, settings):
    """Sessions as the runtime builds them: they carry the cipher effects are encrypted with.
    The outbox starts empty: a relay pass here takes every due effect, and nothing else in this
    session relays (no effects worker, no beat)."""
    sessions = make_session_factory(database, PayloadCipher(settings.encryption_keys))
    with transaction(sessions) as session:
        session.execute(delete(OutboxEffect))
    return sessions


@pytest.fixture
def outside() -> Iterator[tuple[EffectSettings, object, str, object]]:
    with smtp_sink() as (smtp_port, mail), http_receiver() as (url, posts):
        yield EffectSettings(smtp_host="127.0.0.1", smtp_port=smtp_port), mail, url, posts


def send(api, event=None, **fields) -> dict:
    event = event or stripe_events.event(
        "test.outbox", {"id": stripe_events.new_id("obj"), "object": "test", **fields}
    )
    response = api.post_webhook(*stripe_events.signed(event, WEBHOOK_SECRET))
    assert response.status_code == 200
    return event


def effects_of(ledger, event_id: str) -> dict[str, OutboxEffect]:
    with ledger() as session:
        rows = session.scalars(select(OutboxEffect).where(OutboxEffect.event_id == event_id))
        return {row.name: row for row in rows}


def relay(ledger, settings, effect_settings, policy=POLICY):
    kinds = kinds_with_builtins(effect_settings)
    cipher = PayloadCipher(settings.encryption_keys)
    return relay_due(ledger, kinds, cipher, policy, deadline=time.monotonic() + 30)


def test_an_effect_commits_with_its_run_and_is_delivered_once_with_its_key(
    api, worker, ledger, settings, outside
):
    effect_settings, mail, url, posts = outside
    event = send(api, to="buyer@example.com", url=f"{url}/orders")
    event_id = event["id"]
    wait_until(lambda: len(effects_of(ledger, event_id)) == 2, 30, "the effects committed")

    outcome = relay(ledger, settings, effect_settings)
    assert (outcome.delivered, outcome.retried, outcome.dead) == (2, 0, 0)
    effects = effects_of(ledger, event_id)
    (message,) = mail.all()
    assert message["To"] == "buyer@example.com"
    assert message["Message-ID"] == f"<{effects['receipt'].idempotency_key}@payments>"
    (post,) = posts.all()
    assert post.path == "/orders" and post.body == {"object": event["data"]["object"]["id"]}
    assert post.headers["Idempotency-Key"] == effects["notice"].idempotency_key
    assert {row.status for row in effects.values()} == {"done"}
    # Nothing is delivered twice by a later pass.
    assert relay(ledger, settings, effect_settings).delivered == 0
    assert len(mail.all()) == 1 and len(posts.all()) == 1


def test_an_event_delivered_twice_asks_for_its_effects_once(api, worker, ledger):
    event = send(api, to="a@example.com", url="http://127.0.0.1:9/x")
    wait_until(lambda: len(effects_of(ledger, event["id"])) == 2, 30, "the effects committed")
    send(api, event)
    wait_until(
        lambda: f"event {event['id']} (test.outbox) already recorded" in worker.output(),
        30,
        "the second delivery ingested",
    )
    with ledger() as session:
        rows = session.scalars(select(OutboxEffect).where(OutboxEffect.event_id == event["id"]))
        assert sorted(row.name for row in rows) == ["notice", "receipt"]


def test_a_run_that_fails_after_asking_commits_no_effect(api, worker, ledger, sessions):
    from tests.integration.test_delivery_guarantees import wait_for

    event_id = send(api, to="b@example.com", url="http://127.0.0.1:9/x", fail_after_asking=True)[
        "id"
    ]
    wait_for(sessions, event_id, {"tests.outbox": "dead"})
    assert effects_of(ledger, event_id) == {}


def _asked(ledger, url: str) -> str:
    """An event whose effects are in the outbox, asked for directly through the ledger."""
    event_id = stripe_events.new_id("evt")
    from shared.effects.outbox import Effects

    with transaction(ledger) as session:
        effects = Effects(session, event_id, "tests.direct")
        effects.http("notice", url, {"n": 1})
    return event_id


def test_a_failing_delivery_is_retried_with_the_same_key_then_dead_and_replayable(ledger, settings):
    with http_receiver([500, 503, 502]) as (url, posts):
        event_id = _asked(ledger, f"{url}/flaky")
        outcomes = [relay(ledger, settings, EffectSettings()) for _ in range(3)]
        assert [(o.delivered, o.retried, o.dead) for o in outcomes] == [
            (0, 1, 0),
            (0, 1, 0),
            (0, 0, 1),
        ]
        dead = effects_of(ledger, event_id)["notice"]
        assert dead.status == "dead" and "502" in (dead.last_error or "")
        with transaction(ledger) as session:
            assert replay_dead_effects(session, [dead.id]) == [dead.id]
            assert replay_dead_effects(session, [dead.id]) == []
        assert relay(ledger, settings, EffectSettings()).delivered == 1
        keys = {post.headers["Idempotency-Key"] for post in posts.all()}
        assert keys == {dead.idempotency_key} and len(posts.all()) == 4


def test_a_refusal_is_dead_at_once(ledger, settings):
    with http_receiver([400]) as (url, posts):
        event_id = _asked(ledger, url)
        outcome = relay(ledger, settings, EffectSettings())
        assert (outcome.delivered, outcome.dead) == (0, 1)
        assert effects_of(ledger, event_id)["notice"].attempts == 1
        assert len(posts.all()) == 1


class RelayDied(BaseException):
    """What the process dying right after the send looks like to the relay: nothing noted."""


def test_a_relay_that_dies_after_sending_delivers_again_with_the_same_key(ledger, settings):
    with http_receiver() as (url, posts):
        event_id = _asked(ledger, url)
        kinds = kinds_with_builtins(EffectSettings())
        http = kinds.get("http")

        def send_then_die(payload, delivery):
            http(payload, delivery)
            raise RelayDied

        kinds._kinds["http"] = send_then_die
        cipher = PayloadCipher(settings.encryption_keys)
        with pytest.raises(RelayDied):
            relay_due(ledger, kinds, cipher, POLICY, deadline=time.monotonic() + 30)
        # Held by the dead relay until its lease ends; then it comes back (the clock moved on).
        assert claim_one(ledger) is None
        with transaction(ledger) as session:
            session.execute(
                update(OutboxEffect)
                .where(OutboxEffect.event_id == event_id)
                .values(next_attempt_at=OutboxEffect.created_at)
            )
        assert relay(ledger, settings, EffectSettings()).delivered == 1
        first, second = posts.all()
        assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
        assert effects_of(ledger, event_id)["notice"].attempts == 2


def test_a_session_without_the_runtimes_cipher_refuses_an_effect(sessions):
    from shared.effects.outbox import Effects, EffectsUnavailable

    with pytest.raises(EffectsUnavailable), transaction(sessions) as session:
        Effects(session, "evt_x", "tests.direct").http("notice", "http://127.0.0.1:9", {})


def test_dead_effects_are_listed_and_replayed_by_the_admin_api_and_the_cli(
    api, ledger, settings, base_env
):
    from tests.integration.test_delivery_guarantees import admin

    with http_receiver([400, 200]) as (url, posts):
        event_id = _asked(ledger, url)
        assert relay(ledger, settings, EffectSettings()).dead == 1
        listed = admin(api, "GET", "/effects", params={"status": "dead"})
        (shown,) = [e for e in listed.json()["effects"] if e["eventId"] == event_id]
        assert shown["kind"] == "http" and "400" in shown["lastError"]
        assert "payload" not in shown and url not in json.dumps(listed.json())
        assert admin(api, "GET", "/effects", params={"status": "lost"}).status_code == 400
        assert admin(api, "POST", "/effects/replay", json={"ids": ["x"]}).status_code == 400
        replayed = admin(api, "POST", "/effects/replay", json={"ids": [shown["id"]]})
        assert replayed.json() == {"replayed": [shown["id"]]}
        assert relay(ledger, settings, EffectSettings()).delivered == 1
        assert len(posts.all()) == 2

    # The CLI: the same list, the same replay.
    env = {**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT)}
    with http_receiver([400]) as (url, _):
        other = _asked(ledger, url)
        assert relay(ledger, settings, EffectSettings()).dead == 1
    listing = run_payments("effects", "list", "--status", "dead", env=env)
    assert listing.returncode == 0 and other in listing.stdout, listing.stderr
    replay = run_payments("effects", "replay", "--all-dead", env=env)
    assert replay.returncode == 0 and "1 effect(s) sent back" in replay.stdout, replay.stderr
    assert effects_of(ledger, other)["notice"].status == "pending"


def test_payments_handlers_lists_every_handler_with_its_source(base_env):
    env = {**os.environ, **base_env, "PYTHONPATH": str(REPO_ROOT)}
    listed = run_payments("handlers", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "test.outbox" in lines["tests.outbox"]
    assert "tests.support.test_handlers" in lines["tests.outbox"]
    assert "handlers (in its event's batch)" in lines["tests.outbox"]
    assert "shared.payments.handlers.intents" in lines["payments.sync_payment_intent"]
