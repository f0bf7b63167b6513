"""Payment logic called directly: idempotency per caller, leases across the Stripe call, the
ordering rule, callers and their proofs."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from sqlalchemy import select

from shared.infra.stripe_gateway import CreatedIntent
from shared.ledger.handlers.registry import EventView
from shared.models import Payment
from shared.payments import (
    IdempotencyConflict,
    IdempotencyKeyInUse,
    PaymentService,
    apply_payment_intent,
)
from shared.payments.callers import (
    Caller,
    CallerRejected,
    SessionTokenExpired,
    api_client_caller,
    identify_caller,
    new_session_token,
    secret_matches,
    session_caller,
)
from shared.validation import PaymentRequest
from tests.fast.conftest import FAST_KEY

ORDER = PaymentRequest(amount=1500, currency="usd", metadata={"orderId": "7"})
SHOP = Caller("client:shop")
OTHER = Caller("client:other")
_ids = itertools.count(1)


@dataclass
class FakeStripe:
    """Stripe's PaymentIntents with its Idempotency-Key: one intent per key."""

    by_key: dict[str, CreatedIntent] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    fail_with: Exception | None = None
    during_call: Any = None

    def create_payment_intent(
        self, *, amount, currency, metadata, idempotency_key, capture_method=None
    ):
        self.calls.append(idempotency_key)
        if self.during_call:
            self.during_call()
        if self.fail_with:
            raise self.fail_with
        if idempotency_key not in self.by_key:
            n = next(_ids)
            self.by_key[idempotency_key] = CreatedIntent(
                f"pi_fast{n}", f"pi_fast{n}_secret_s{n}", "requires_payment_method",
                amount, currency, metadata, 1_700_000_000,
            )  # fmt: skip
        return self.by_key[idempotency_key]

    def retrieve_payment_intent(self, payment_intent_id):
        return next(i for i in self.by_key.values() if i.id == payment_intent_id)


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def stripe() -> FakeStripe:
    return FakeStripe()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(db, stripe, clock) -> PaymentService:
    return PaymentService(db, stripe, lease_seconds=65, clock=clock)


def row(db, payment_intent_id: str) -> Payment:
    with db() as session:
        return session.execute(
            select(Payment).where(Payment.payment_intent_id == payment_intent_id)
        ).scalar_one()


def test_one_key_one_payment_intent_and_the_same_answer_again(service, stripe, db):
    first = service.create(ORDER, "k1", SHOP)
    again = service.create(ORDER, "k1", SHOP)

    assert (first.replayed, again.replayed) == (False, True)
    assert again.payment_intent_id == first.payment_intent_id
    assert again.client_secret == first.client_secret
    assert len(stripe.by_key) == 1
    stored = row(db, first.payment_intent_id)
    assert stored.caller == "client:shop" and stored.create_lease_until is None
    assert secret_matches(first.client_secret, stored.client_secret_sha256)


def test_the_same_key_of_two_callers_is_two_payments(service, stripe):
    mine, theirs = service.create(ORDER, "k1", SHOP), service.create(ORDER, "k1", OTHER)
    assert mine.payment_intent_id != theirs.payment_intent_id
    # Namespaced at Stripe too.
    assert len(set(stripe.calls)) == 2


def test_the_same_key_with_another_body_is_a_conflict(service):
    service.create(ORDER, "k1", SHOP)
    with pytest.raises(IdempotencyConflict):
        service.create(PaymentRequest(1600, "usd", {}), "k1", SHOP)


def test_a_key_in_flight_is_in_use_and_the_call_holds_no_transaction(service, stripe, db):
    seen: list[Any] = []

    def concurrent_request() -> None:
        with pytest.raises(IdempotencyKeyInUse) as in_use:
            service.create(ORDER, "k1", SHOP)
        seen.append(in_use.value.retry_after_seconds)

    stripe.during_call = concurrent_request
    created = service.create(ORDER, "k1", SHOP)

    assert seen == [1]
    assert created.replayed is False


def test_an_expired_lease_is_taken_over_with_the_same_stripe_key(service, stripe, db, clock):
    crashed = PaymentService(db, _CrashAfterStripe(stripe), lease_seconds=65, clock=clock)
    with pytest.raises(SystemExit):
        crashed.create(ORDER, "k1", SHOP)
    with pytest.raises(IdempotencyKeyInUse):
        service.create(ORDER, "k1", SHOP)

    clock.now += dt.timedelta(seconds=66)
    retried = service.create(ORDER, "k1", SHOP)

    assert len(stripe.by_key) == 1
    assert stripe.calls[0] == stripe.calls[-1]
    assert retried.payment_intent_id == next(iter(stripe.by_key.values())).id


class _CrashAfterStripe:
    """Stripe answers, then the process dies before our commit (no cleanup runs)."""

    def __init__(self, real: FakeStripe) -> None:
        self.real = real

    def create_payment_intent(self, **kwargs):
        self.real.create_payment_intent(**kwargs)
        raise SystemExit("killed")

    def retrieve_payment_intent(self, payment_intent_id):
        return self.real.retrieve_payment_intent(payment_intent_id)


def test_a_stripe_error_frees_the_key_at_once(service, stripe):
    stripe.fail_with = ConnectionError("stripe unreachable")
    with pytest.raises(ConnectionError):
        service.create(ORDER, "k1", SHOP)
    stripe.fail_with = None
    assert service.create(ORDER, "k1", SHOP).replayed is False


def test_without_a_key_each_request_is_its_own_payment(service, stripe):
    first, second = service.create(ORDER, None, SHOP), service.create(ORDER, None, SHOP)
    assert first.payment_intent_id != second.payment_intent_id


def intent(pi: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"id": pi, "status": status, "amount": 1500, "currency": "usd", **extra}


def at(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(1_700_000_000 + seconds, dt.UTC)


def apply(db, data: dict[str, Any], seconds: int, fetch=None) -> bool:
    with db.begin() as session:
        return apply_payment_intent(session, data, at(seconds), fetch)


def status_of(db, pi: str) -> str:
    return row(db, pi).status


def test_a_late_older_event_never_undoes_a_newer_status(db):
    apply(db, intent("pi_o1", "processing"), 10)
    assert apply(db, intent("pi_o1", "requires_payment_method"), 5) is False
    assert status_of(db, "pi_o1") == "processing"


def test_a_terminal_status_is_final(db):
    apply(db, intent("pi_o2", "succeeded"), 10)
    assert apply(db, intent("pi_o2", "processing"), 20) is False
    assert status_of(db, "pi_o2") == "succeeded"


def test_a_same_second_tie_is_settled_by_asking_stripe(db):
    apply(db, intent("pi_o3", "processing"), 10)
    asked: list[str] = []

    def stripe_now(pi: str) -> dict[str, Any]:
        asked.append(pi)
        return intent(pi, "requires_payment_method", last_payment_error={"code": "card_declined"})

    apply(db, intent("pi_o3", "requires_action"), 10, stripe_now)

    assert asked == ["pi_o3"]
    stored = row(db, "pi_o3")
    assert (stored.status, stored.last_error_code) == ("requires_payment_method", "card_declined")


def test_a_tie_without_stripe_goes_to_the_later_lifecycle_step(db):
    apply(db, intent("pi_o4", "processing"), 10)
    apply(db, intent("pi_o4", "requires_action"), 10)
    assert status_of(db, "pi_o4") == "processing"


ISSUED = 1_800_000_000
WEEK = 7 * 24 * 3600


def verify(token: str, keys: tuple[str, ...], now: int = ISSUED + 60) -> Caller:
    return session_caller(token, keys, now=now, max_age_seconds=WEEK)


def test_checkout_session_tokens_are_signed_and_survive_a_key_rotation():
    old_key, new_key = FAST_KEY, "bmV3LWtleS1mb3ItdGVzdHMtb25seS0zMmJ5dGVzISE="
    token = new_session_token("cs_one", ISSUED, (old_key,))
    caller = verify(token, (old_key,))

    assert caller == Caller("session:cs_one")
    assert verify(token, (new_key, old_key)) == caller
    assert verify(new_session_token("cs_two", ISSUED, (old_key,)), (old_key,)) != caller
    session_id, issued, signature = token.split(".")
    forgeries = (
        token[:-2] + "AA",
        "x.y",
        f"{session_id}.{issued}.",
        # Another session's id, or another issue time, under this token's signature.
        f"cs_two.{issued}.{signature}",
        f"{session_id}.{ISSUED + WEEK}.{signature}",
    )
    for forged in forgeries:
        with pytest.raises(CallerRejected):
            verify(forged, (old_key,))
    with pytest.raises(CallerRejected):
        verify(token, (new_key,))


def test_a_session_token_older_than_any_session_lives_is_refused_without_a_lookup():
    token = new_session_token("cs_old", ISSUED, (FAST_KEY,))
    assert verify(token, (FAST_KEY,), now=ISSUED + WEEK) == Caller("session:cs_old")
    with pytest.raises(SessionTokenExpired):
        verify(token, (FAST_KEY,), now=ISSUED + WEEK + 1)


def test_api_clients_and_the_order_of_credentials():
    clients = (("shop", "s" * 30), ("other", "o" * 30))
    assert api_client_caller("o" * 30, clients) == Caller("client:other")
    with pytest.raises(CallerRejected):
        api_client_caller("x" * 30, clients)
    # An offered but wrong credential never falls back to another one.
    token = new_session_token("cs_any", ISSUED, (FAST_KEY,))
    identify = partial(
        identify_caller,
        api_clients=clients,
        encryption_keys=(FAST_KEY,),
        now=ISSUED,
        session_max_age_seconds=WEEK,
    )
    with pytest.raises(CallerRejected):
        identify("Bearer wrong", token)
    assert identify(None, None) is None
    assert Caller("client:shop").stripe_idempotency_key("k") != Caller(
        "client:other"
    ).stripe_idempotency_key("k")
    assert len(Caller("client:shop").stripe_idempotency_key("k" * 255)) <= 255


def test_a_key_whose_row_moved_before_it_was_locked_is_looked_up_again(
    service, stripe, monkeypatch
):
    """Between the claim finding the key taken and locking its row, the row can move onto a
    webhook's (shared.payments.service._move_key_to_webhook_row): the lock then finds nothing,
    and the claim starts over rather than failing the request."""
    first = service.create(ORDER, "k-moved", SHOP)
    looks: list[str] = []
    real = PaymentService._claim_used_key

    def moved_on_the_first_look(self: PaymentService, caller, key, *rest: Any):
        looks.append(key)
        return None if len(looks) == 1 else real(self, caller, key, *rest)

    monkeypatch.setattr(PaymentService, "_claim_used_key", moved_on_the_first_look)
    again = service.create(ORDER, "k-moved", SHOP)

    assert looks == ["k-moved", "k-moved"]
    assert (again.payment_intent_id, again.replayed) == (first.payment_intent_id, True)
    assert len(stripe.by_key) == 1


def test_every_payment_intent_says_at_stripe_who_made_it(service, stripe, db):
    created = service.create(ORDER, "k-caller", SHOP)
    by_session = service.create(ORDER, "cs_abc", Caller("session:cs_abc"))

    sent = {intent.id: intent.metadata for intent in stripe.by_key.values()}
    assert sent[created.payment_intent_id] == {"orderId": "7", "payments_caller": "client:shop"}
    assert sent[by_session.payment_intent_id] == {
        "orderId": "7",
        "payments_caller": "session:cs_abc",
    }
    # The row keeps what Stripe holds, as the payment's own events will say it.
    assert row(db, created.payment_intent_id).metadata_["payments_caller"] == "client:shop"


def test_a_handler_reads_who_made_the_payment_from_its_event():
    def view(metadata: Any) -> EventView:
        payload = {"data": {"object": {"id": "pi_1", "metadata": metadata}}}
        return EventView("evt_1", "payment_intent.succeeded", None, payload)

    assert view({"payments_caller": "session:cs_abc"}).payments_caller == "session:cs_abc"
    assert view({"orderId": "7"}).payments_caller is None
    assert view(None).payments_caller is None
    assert view({"payments_caller": 7}).payments_caller is None
