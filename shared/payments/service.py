"""Creating PaymentIntents once per (caller, idempotency key), holding nothing across Stripe."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Engine, Table, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared.db import execute_alone, transaction
from shared.infra.stripe_gateway import CreatedIntent, PaymentGateway
from shared.infra.timeutil import utc_from_timestamp
from shared.models import Payment
from shared.payments.callers import Caller, secret_digest
from shared.validation import CALLER_METADATA_KEY, PaymentRequest

log = logging.getLogger(__name__)


class IdempotencyConflict(Exception):
    """The idempotency key was used before with a different request body."""


class IdempotencyKeyInUse(Exception):
    """Another request with this key is talking to Stripe right now (Stripe's own 409)."""

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__("idempotency key in use")
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True)
class PaymentCreated:
    payment_intent_id: str
    client_secret: str
    replayed: bool


def request_fingerprint(request: PaymentRequest) -> str:
    canonical = json.dumps(request.canonical(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def stamped_metadata(request: PaymentRequest, caller: Caller) -> dict[str, str]:
    """The metadata a PaymentIntent is made with: the caller's, and who the caller is, so a
    handler (and Stripe's dashboard) can tell a session's payment from a back end's."""
    return {**request.metadata, CALLER_METADATA_KEY: caller.scope}


@dataclass(frozen=True)
class _Claim:
    """What the first, short transaction found for a (caller, key)."""

    row_id: int
    # Set when the key already produced a PaymentIntent: answer with it again.
    payment_intent_id: str | None


class PaymentService:
    """Creates PaymentIntents once per (caller, idempotency key).

    No database connection or row lock is held while Stripe is called (that can take the SDK's
    timeout times its retries): the key is recorded with a lease in one short transaction,
    Stripe is called with a Stripe idempotency key derived from ours, and the answer is recorded
    in a second. A request that finds the key leased answers like Stripe (409
    ``idempotency_key_in_use``); one that finds the lease expired (its holder died, before or
    after Stripe answered) takes it over and asks Stripe again with the same Stripe key, which
    returns the PaymentIntent the dead holder created rather than a second one.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        gateway: PaymentGateway,
        *,
        statements: Engine | None = None,
        lease_seconds: int = 65,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._sessions = session_factory
        # For the single statements of the common path: ``Runtime.statements``, on which each
        # commits by itself in one round trip; by default, transactions of session_factory.
        self._statements: Engine | sessionmaker[Session] = statements or session_factory
        self._gateway = gateway
        self._lease = dt.timedelta(seconds=lease_seconds)
        self._now = clock

    def create(
        self, request: PaymentRequest, idempotency_key: str | None, caller: Caller
    ) -> PaymentCreated:
        claim = self._claim(request, idempotency_key, caller)
        # Without a key of the caller's, one of ours still makes the SDK's own retries safe.
        key = idempotency_key or f"auto-{uuid.uuid4()}"
        if claim.payment_intent_id is not None:
            # Client secrets are never stored: fetch it again from Stripe for the replay.
            intent = self._gateway.retrieve_payment_intent(claim.payment_intent_id)
            return PaymentCreated(intent.id, intent.client_secret, replayed=True)
        try:
            intent = self._gateway.create_payment_intent(
                amount=request.amount,
                currency=request.currency,
                metadata=stamped_metadata(request, caller),
                idempotency_key=caller.stripe_idempotency_key(key),
                capture_method=request.capture_method,
            )
        except Exception:
            # Stripe said no (or could not be reached): free the key now, so a retry need not
            # wait for the lease. Whatever Stripe did, its idempotency key makes a retry safe.
            # A process being torn down (SystemExit, a kill) leaves the lease to expire.
            self._release(claim.row_id)
            raise
        self._attach(claim.row_id, intent)
        return PaymentCreated(intent.id, intent.client_secret, replayed=False)

    def _claim(self, request: PaymentRequest, key: str | None, caller: Caller) -> _Claim:
        fingerprint = request_fingerprint(request)
        now = self._now()
        claim = {
            "caller": caller.scope,
            "idempotency_key": key,
            "request_fingerprint": fingerprint,
            "amount": request.amount,
            "currency": request.currency,
            "metadata": stamped_metadata(request, caller),
            # As asked; Stripe's own default (when not asked) comes with its events.
            "capture_method": request.capture_method,
            "create_lease_until": now + self._lease,
        }
        for _ in range(_CLAIM_ATTEMPTS):
            # A key not seen before (nearly every request): one statement.
            inserted = execute_alone(self._statements, _CLAIM, claim)
            if inserted:
                return _Claim(inserted[0].id, None)
            assert key is not None  # rows without a key never conflict
            taken = self._claim_used_key(caller, key, fingerprint, now)
            if taken is not None:
                return taken
        raise RuntimeError(f"idempotency key kept moving for {_CLAIM_ATTEMPTS} attempts")

    def _claim_used_key(
        self, caller: Caller, key: str, fingerprint: str, now: dt.datetime
    ) -> _Claim | None:
        """The key has a row: answer with its PaymentIntent, refuse, or take over its lease.
        None if the row was gone by the time it was locked: its key moved onto a webhook's row
        (``_move_key_to_webhook_row``) after this request's statement began, so look again."""
        with transaction(self._sessions) as session:
            # Locked for the length of this transaction only: milliseconds, never a Stripe call.
            payment = session.execute(
                select(Payment)
                .where(Payment.caller == caller.scope, Payment.idempotency_key == key)
                .with_for_update()
            ).scalar_one_or_none()
            if payment is None:
                return None
            if payment.request_fingerprint != fingerprint:
                raise IdempotencyConflict(key)
            if payment.payment_intent_id is not None:
                return _Claim(payment.id, payment.payment_intent_id)
            lease = payment.create_lease_until
            if lease is not None and lease > now:
                raise IdempotencyKeyInUse(retry_after_seconds=1)
            log.warning(
                "taking over idempotency key of payment row %s: its lease ran out", payment.id
            )
            payment.create_lease_until = now + self._lease
            return _Claim(payment.id, None)

    def _release(self, row_id: int) -> None:
        execute_alone(self._statements, _RELEASE, {"row_id": row_id})

    def _attach(self, row_id: int, intent: CreatedIntent) -> None:
        # One statement in the common case: our row takes the PaymentIntent. Should a webhook
        # have recorded the PaymentIntent first (its row holds the unique id), that statement
        # fails whole, and a second transaction moves our key onto that row instead.
        try:
            execute_alone(self._statements, _ATTACH, _attach_values(row_id, intent))
        except IntegrityError:
            with transaction(self._sessions) as session:
                _move_key_to_webhook_row(session, row_id, intent)

    def get(self, payment_intent_id: str) -> Payment | None:
        with self._sessions() as session:
            return session.execute(
                select(Payment).where(Payment.payment_intent_id == payment_intent_id)
            ).scalar_one_or_none()


# A key's row can move (onto a webhook's row) between finding it taken and locking it; it
# moves once, so a second look finds it. The third is slack, not expected.
_CLAIM_ATTEMPTS = 3

# create-payment's two statements, built once from bound parameters and sent through Core: an
# ORM insert or update built per request cost more than the round trip (make bench).
_PAYMENTS = cast(Table, Payment.__table__)
_CLAIMED_COLUMNS = (
    "caller", "idempotency_key", "request_fingerprint", "amount", "currency", "metadata",
    "capture_method", "create_lease_until",
)  # fmt: skip
_CLAIM = (
    insert(_PAYMENTS)
    .values(
        status="creating",
        **{name: bindparam(name, type_=_PAYMENTS.c[name].type) for name in _CLAIMED_COLUMNS},
    )
    .on_conflict_do_nothing(index_elements=[_PAYMENTS.c.caller, _PAYMENTS.c.idempotency_key])
    .returning(_PAYMENTS.c.id)
    # Its commit waits for the WAL flush, as every commit here: a claim lost in a crash could
    # see its id handed out again by the sequence (logged with it), and the attach, which
    # finds the row by id, would then write this PaymentIntent onto another caller's claim.
)
_ATTACHED = (
    "client_secret_sha256", "payment_intent_id", "status", "status_as_of", "amount", "currency",
)  # fmt: skip
# Our claimed row, while it has no PaymentIntent. One that has one already (a request that took
# over our lease recorded the same one, and a webhook may have moved its status on since) is
# left as it is by both statements below.
_OUR_CLAIM_UNATTACHED = update(_PAYMENTS).where(
    _PAYMENTS.c.id == bindparam("row_id"), _PAYMENTS.c.payment_intent_id.is_(None)
)
# Our idempotency row takes the created PaymentIntent; the lease is over.
_ATTACH = _OUR_CLAIM_UNATTACHED.values(
    updated_at=func.now(),
    create_lease_until=None,
    # Bound names other than the columns': SET reserves the columns' own.
    **{name: bindparam(f"new_{name}", type_=_PAYMENTS.c[name].type) for name in _ATTACHED},
)
# Stripe said no: the key is free at once, rather than when the lease runs out.
_RELEASE = _OUR_CLAIM_UNATTACHED.values(create_lease_until=None)


def _attach_values(row_id: int, intent: CreatedIntent) -> dict[str, Any]:
    values = {"client_secret_sha256": secret_digest(intent.client_secret), **_intent_fields(intent)}
    return {"row_id": row_id, **{f"new_{name}": value for name, value in values.items()}}


def _intent_fields(intent: CreatedIntent) -> dict[str, Any]:
    return {
        "payment_intent_id": intent.id,
        "status": intent.status,
        "status_as_of": utc_from_timestamp(intent.created),
        "amount": intent.amount,
        "currency": intent.currency,
    }


def _move_key_to_webhook_row(session: Session, row_id: int, intent: CreatedIntent) -> None:
    """A webhook for this PaymentIntent got here first and created its row. Keep that row (it
    may carry a newer status) and move our idempotency key onto it."""
    payment = session.execute(
        select(Payment).where(Payment.id == row_id).with_for_update()
    ).scalar_one_or_none()
    if payment is None:
        return  # a request that took over our lease moved the key already
    owner = {
        "caller": payment.caller,
        "idempotency_key": payment.idempotency_key,
        "request_fingerprint": payment.request_fingerprint,
        "client_secret_sha256": secret_digest(intent.client_secret),
        "create_lease_until": None,
    }
    session.execute(delete(Payment).where(Payment.id == row_id))
    session.execute(update(Payment).where(Payment.payment_intent_id == intent.id).values(**owner))
