"""A handler's own policy (@registry.handles(..., queue=..., max_attempts=...,
time_limit_seconds=...)): a handler with a queue of its own is never applied in the
transaction that records its event; its run is written pending and untried, for the caller to
enqueue on its queue. Its attempts and time limit replace the service's for it alone."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shared.config import ConfigError, Settings
from shared.infra.crypto import PayloadCipher
from shared.ledger.handlers import EventView, HandlerRegistry
from shared.ledger.ingest.first_delivery import record_and_apply
from shared.ledger.ingest.redelivery import ingest
from shared.ledger.recovery.held import list_held, release_held
from shared.ledger.retry import RetryPolicy
from shared.models import HandlerRun
from shared.runtime import check_handler_queues
from tests.fast.ledger_kit import POLICY, SCOPE, make_event

CALLED: list[str] = []


def _registry() -> HandlerRegistry:
    handlers = HandlerRegistry()

    @handlers.handles("fast.policy", name="fast.inline")
    def inline(session: Session, event: EventView) -> None:
        CALLED.append("fast.inline")

    @handlers.handles(
        "fast.policy", name="fast.queued", queue="slow", max_attempts=2, time_limit_seconds=90
    )
    def queued(session: Session, event: EventView) -> None:
        CALLED.append("fast.queued")

    return handlers


def _runs(db: sessionmaker[Session], event_id: str) -> dict[str, tuple[str, int]]:
    with db() as session:
        rows = session.scalars(select(HandlerRun).where(HandlerRun.event_id == event_id))
        return {run.handler: (run.status, run.attempts) for run in rows}


def test_a_queued_handler_is_left_pending_for_its_queue_on_a_first_delivery(db, cipher):
    CALLED.clear()
    event = make_event("fast.policy")
    recorded, outcome, pending = record_and_apply(
        db, event, "webhook", cipher, None, POLICY, registry=_registry()
    )
    assert recorded is not None and outcome.done == ["fast.inline"]
    assert pending == ["fast.queued"] and CALLED == ["fast.inline"]
    assert _runs(db, event["id"]) == {"fast.inline": ("done", 1), "fast.queued": ("pending", 0)}


def test_a_redelivery_claims_only_the_ledgers_handlers(db, cipher: PayloadCipher):
    event = make_event("fast.policy")
    result = ingest(
        db,
        cipher.encrypt(event),
        "webhook",
        cipher,
        SCOPE,
        claim_lease=dt.timedelta(seconds=30),
        registry=_registry(),
    )
    assert result.claimed_handlers == ["fast.inline"]
    assert result.pending_handlers == ["fast.queued"]
    assert _runs(db, event["id"]) == {"fast.inline": ("pending", 1), "fast.queued": ("pending", 0)}


def test_a_handlers_own_attempts_and_time_limit_replace_the_services():
    handlers = _registry()
    own = handlers.retry_policy("fast.queued", POLICY)
    assert (own.max_transient_attempts, own.time_limit_seconds) == (2, 90)
    assert own.lease_seconds == 95
    assert handlers.retry_policy("fast.inline", POLICY) is POLICY
    assert handlers.retry_policy("renamed.long.ago", POLICY) is POLICY
    assert isinstance(own, RetryPolicy)


def test_a_time_limit_of_its_own_needs_a_task_of_its_own():
    with pytest.raises(ValueError, match="batch=False or a queue"):
        HandlerRegistry().handles("fast.policy", name="fast.x", time_limit_seconds=5)
    HandlerRegistry().handles("fast.policy", name="fast.x", time_limit_seconds=5, batch=False)


def test_a_handler_out_of_the_batch_is_left_pending_for_the_handlers_queue(db, cipher):
    handlers = HandlerRegistry()
    handlers.handles("fast.policy", name="fast.alone", batch=False, retry_base_seconds=30)(
        lambda session, event: CALLED.append("fast.alone")
    )
    CALLED.clear()
    event = make_event("fast.policy")
    _, _, pending = record_and_apply(db, event, "webhook", cipher, None, POLICY, registry=handlers)
    assert pending == ["fast.alone"] and CALLED == []
    assert handlers.policy_of("fast.alone").queue is None
    assert handlers.retry_policy("fast.alone", POLICY).base_seconds == 30


def test_every_handler_queue_must_be_declared():
    settings = Settings(
        stripe_secret_key="sk_test_" + "x" * 24,
        stripe_publishable_key="pk_test_" + "x" * 24,
        stripe_webhook_secrets=("whsec_x",),
        database_url="postgresql://x",
        redis_url="redis://x",
    )
    with pytest.raises(ConfigError, match="HANDLER_QUEUES does not list: slow"):
        check_handler_queues(_registry(), settings)
    check_handler_queues(_registry(), replace(settings, handler_queues=("slow",)))


def test_an_event_of_a_version_its_handler_does_not_read_is_held_then_released(db, cipher):
    handlers = HandlerRegistry()
    handlers.handles("fast.versioned", name="fast.any")(lambda s, e: CALLED.append("fast.any"))
    handlers.handles("fast.versioned", name="fast.new_only", api_versions=("2026-10-28.endive",))(
        lambda s, e: CALLED.append("fast.new_only")
    )
    CALLED.clear()
    old = {**make_event("fast.versioned"), "api_version": "2025-10-29.clover"}
    new = {**make_event("fast.versioned"), "api_version": "2026-10-28.endive"}
    for event in (old, new):
        record_and_apply(db, event, "webhook", cipher, None, POLICY, registry=handlers)
    assert CALLED == ["fast.any", "fast.any", "fast.new_only"]
    assert _runs(db, old["id"]) == {"fast.any": ("done", 1), "fast.new_only": ("held", 0)}
    assert [(r.event_id, r.handler) for r in list_held(db)] == [(old["id"], "fast.new_only")]
    sent: list[tuple[str, str]] = []
    released = release_held(db, lambda e, h: sent.append((e, h)), event_id=old["id"])
    assert released == sent == [(old["id"], "fast.new_only")]
    assert _runs(db, old["id"])["fast.new_only"] == ("pending", 0)
    assert release_held(db, lambda e, h: sent.append((e, h)), event_id=old["id"]) == []


def test_a_redelivery_writes_a_held_run_held(db, cipher: PayloadCipher):
    handlers = HandlerRegistry()
    handlers.handles("fast.versioned", name="fast.new_only", api_versions=("v2",))(
        lambda s, e: None
    )
    event = {**make_event("fast.versioned"), "api_version": "v1"}
    result = ingest(
        db,
        cipher.encrypt(event),
        "webhook",
        cipher,
        SCOPE,
        claim_lease=dt.timedelta(seconds=30),
        registry=handlers,
    )
    assert result.claimed_handlers == [] and result.pending_handlers == []
    assert _runs(db, event["id"]) == {"fast.new_only": ("held", 0)}
