"""The relay: delivers each committed effect at least once, outside any transaction.

A pass takes one due pending effect at a time (``FOR UPDATE SKIP LOCKED``: relays on many hosts
never take the same one), counts an attempt on it and moves its ``next_attempt_at`` a lease
ahead, and commits; then delivers it with no transaction open while an SMTP server or an HTTP
endpoint takes its time, and writes the outcome: done, a retry after the policy's backoff, or
dead with its error (a final failure, or no attempts left). A relay that dies mid-send leaves
its effect to come back when the lease ends: delivered again, with the same idempotency key,
which is the at-least-once the receiver's key check absorbs.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.effects.kinds import Delivery, EffectKinds, EffectSettings, FinalFailure
from shared.infra.crypto import PayloadCipher
from shared.ledger.retry import GiveUp, RetryPolicy
from shared.ledger.runs.rows import error_text
from shared.models import OutboxEffect, RunStatus
from shared.observability.metrics import EFFECTS_DELIVERED

log = logging.getLogger(__name__)

# A pass takes no new effect after this long; the task's time limits leave room for the one in
# hand.
RELAY_PASS_SECONDS = 30.0


@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    payload_encrypted: str
    delivery: Delivery


@dataclass
class RelayOutcome:
    delivered: int = 0
    retried: int = 0
    dead: int = 0


def relay_due(
    sessions: sessionmaker[Session],
    kinds: EffectKinds,
    cipher: PayloadCipher,
    policy: RetryPolicy,
    *,
    deadline: float,
    lease_seconds: float = EffectSettings().lease_seconds,
) -> RelayOutcome:
    """Deliver due effects until none is left or ``deadline`` (time.monotonic) has passed. A
    pass tries each effect once: one that failed waits for a later pass, however short its
    backoff, so a failing endpoint is not hammered."""
    outcome = RelayOutcome()
    tried: set[int] = set()
    while time.monotonic() < deadline:
        effect = claim_one(sessions, tried, lease_seconds)
        if effect is None:
            break
        tried.add(effect.id)
        _deliver_one(sessions, kinds, cipher, policy, effect, outcome)
    return outcome


def claim_one(
    sessions: sessionmaker[Session],
    tried: Collection[int] = (),
    lease_seconds: float = EffectSettings().lease_seconds,
) -> Claimed | None:
    """Take one due effect, counting its attempt, for ``lease_seconds``: longer than its
    delivery may take, so a live relay is never overtaken; a dead one's effect comes back
    after it."""
    lease = dt.timedelta(seconds=lease_seconds)
    due = (
        select(OutboxEffect)
        .where(OutboxEffect.status == RunStatus.PENDING)
        .where(OutboxEffect.next_attempt_at <= func.now())
    )
    if tried:
        due = due.where(OutboxEffect.id.not_in(list(tried)))
    with transaction(sessions) as session:
        row = session.scalars(
            due.order_by(OutboxEffect.next_attempt_at).limit(1).with_for_update(skip_locked=True)
        ).first()
        if row is None:
            return None
        row.attempts += 1
        row.next_attempt_at = func.now() + lease
        return _claimed(row)


def _claimed(row: OutboxEffect) -> Claimed:
    delivery = Delivery(row.idempotency_key, row.event_id, row.handler, row.name, row.attempts)
    return Claimed(row.id, row.kind, row.payload_encrypted, delivery)


def _deliver_one(
    sessions: sessionmaker[Session],
    kinds: EffectKinds,
    cipher: PayloadCipher,
    policy: RetryPolicy,
    effect: Claimed,
    outcome: RelayOutcome,
) -> None:
    try:
        kinds.get(effect.kind)(cipher.decrypt(effect.payload_encrypted), effect.delivery)
    except Exception as error:  # noqa: BLE001 - every failure is noted; the policy decides
        _note_failure(sessions, policy, effect, error, outcome)
        return
    with transaction(sessions) as session:
        session.execute(
            update(OutboxEffect)
            .where(OutboxEffect.id == effect.id)
            .values(status=RunStatus.DONE, delivered_at=func.now(), last_error=None)
        )
    outcome.delivered += 1
    EFFECTS_DELIVERED.labels(kind=effect.kind, result="done").inc()


def _note_failure(
    sessions: sessionmaker[Session],
    policy: RetryPolicy,
    effect: Claimed,
    error: Exception,
    outcome: RelayOutcome,
) -> None:
    attempt = effect.delivery.attempt
    decision = GiveUp() if isinstance(error, FinalFailure) else policy.after_failure(attempt, error)
    values: dict[str, object] = {"last_error": error_text(error)}
    if isinstance(decision, GiveUp):
        values["status"] = RunStatus.DEAD
        outcome.dead += 1
        result = "dead"
        log.error("effect %s dead after %d attempt(s): %s", effect.delivery.name, attempt, error)
    else:
        values["next_attempt_at"] = func.now() + dt.timedelta(seconds=decision.countdown)
        outcome.retried += 1
        result = "retry"
        log.warning(
            "effect %s failed (attempt %d), again in %.1fs: %s",
            effect.delivery.name,
            attempt,
            decision.countdown,
            error,
        )
    with transaction(sessions) as session:
        session.execute(update(OutboxEffect).where(OutboxEffect.id == effect.id).values(**values))
    EFFECTS_DELIVERED.labels(kind=effect.kind, result=result).inc()


def replay_dead_effects(session: Session, ids: list[int] | None = None) -> list[int]:
    """Send dead effects back to the relay (all of them, or ``ids``), with fresh attempts and
    the same idempotency key. Idempotent: an effect that is not dead is left alone."""
    statement = (
        update(OutboxEffect)
        .where(OutboxEffect.status == RunStatus.DEAD)
        .values(
            status=RunStatus.PENDING,
            attempts=0,
            next_attempt_at=func.now(),
            replays=OutboxEffect.replays + 1,
        )
        .returning(OutboxEffect.id)
    )
    if ids is not None:
        statement = statement.where(OutboxEffect.id.in_(ids))
    return list(session.scalars(statement))


def effects_of(session: Session, status: str | None, limit: int) -> Iterator[OutboxEffect]:
    """The newest effects first, of one status or all; payloads stay encrypted."""
    query = select(OutboxEffect).order_by(OutboxEffect.created_at.desc(), OutboxEffect.id.desc())
    if status is not None:
        query = query.where(OutboxEffect.status == status)
    yield from session.scalars(query.limit(limit))


def count_dead_effects(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        query = select(func.count()).where(OutboxEffect.status == RunStatus.DEAD)
        return int(session.scalar(query) or 0)


def rotate_effect_payloads(
    sessions: sessionmaker[Session], cipher: PayloadCipher, *, batch_size: int = 500
) -> int:
    """Re-encrypt every effect's payload under the newest key (after a key rotation, before the
    old key is dropped), in batches by id, each its own transaction. Returns how many."""
    rotated = 0
    last_id = 0
    while True:
        with transaction(sessions) as session:
            rows = list(
                session.scalars(
                    select(OutboxEffect)
                    .where(OutboxEffect.id > last_id)
                    .order_by(OutboxEffect.id)
                    .limit(batch_size)
                    .with_for_update()
                )
            )
            if not rows:
                return rotated
            for row in rows:
                if not cipher.is_current(row.payload_encrypted):
                    row.payload_encrypted = cipher.rotate(row.payload_encrypted)
                    rotated += 1
            last_id = rows[-1].id
