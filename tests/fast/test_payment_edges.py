"""Payment logic at its edges: a webhook that records the PaymentIntent before we do, a lease
taken over while Stripe was still answering, every case of the ordering rule, and callers."""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from shared.models import Payment
from shared.payments import Decision, PaymentService, apply_payment_intent, decide, should_apply
from shared.payments.callers import (
    Caller,
    CallerRejected,
    identify_caller,
    new_session_token,
    secret_digest,
    secret_matches,
)
from shared.payments.ordering import lifecycle_rank
from tests.fast.conftest import FAST_KEY
from tests.fast.test_payments import ORDER, SHOP, Clock, FakeStripe

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
LATER = T0 + dt.timedelta(seconds=1)


def rows(db) -> list[Payment]:
    with db() as session:
        return list(session.execute(select(Payment).order_by(Payment.id)).scalars())


def test_a_webhook_that_recorded_the_payment_first_keeps_its_row_and_gets_our_key(db):
    stripe = FakeStripe()

    class WebhookFirst:
        """Stripe answers; its payment_intent.succeeded is applied before our own commit."""

        def create_payment_intent(self, **kwargs: Any) -> Any:
            created = stripe.create_payment_intent(**kwargs)
            with db.begin() as session:
                apply_payment_intent(
                    session,
                    {"id": created.id, "status": "succeeded", "amount": 1500, "currency": "usd"},
                    T0 + dt.timedelta(days=1),
                )
            return created

        def retrieve_payment_intent(self, payment_intent_id: str) -> Any:
            return stripe.retrieve_payment_intent(payment_intent_id)

    service = PaymentService(db, WebhookFirst(), clock=Clock())

    created = service.create(ORDER, "k1", SHOP)

    (row,) = rows(db)
    assert row.payment_intent_id == created.payment_intent_id
    # The webhook's newer status stays; our key, owner and secret hash move onto its row.
    assert (row.status, row.caller, row.idempotency_key) == ("succeeded", SHOP.scope, "k1")
    assert row.client_secret_sha256 == secret_digest(created.client_secret)
    assert row.create_lease_until is None
    again = service.create(ORDER, "k1", SHOP)
    assert (again.payment_intent_id, again.replayed) == (created.payment_intent_id, True)


def test_a_holder_whose_lease_was_taken_over_records_nothing_twice(db):
    stripe, clock = FakeStripe(), Clock()
    service = PaymentService(db, stripe, lease_seconds=65, clock=clock)
    taken_over: list[str] = []

    def slow_stripe() -> None:
        # The first request waits on Stripe past its lease; a retry takes the key over,
        # reaches Stripe with the same Stripe key and records the same PaymentIntent first.
        stripe.during_call = None
        clock.now += dt.timedelta(seconds=66)
        taken_over.append(service.create(ORDER, "k1", SHOP).payment_intent_id)

    stripe.during_call = slow_stripe

    first = service.create(ORDER, "k1", SHOP)

    assert taken_over == [first.payment_intent_id]
    assert len(stripe.by_key) == 1
    (row,) = rows(db)
    assert (row.payment_intent_id, row.create_lease_until) == (first.payment_intent_id, None)


def test_a_payment_is_read_back_by_its_payment_intent(db):
    service = PaymentService(db, FakeStripe(), clock=Clock())
    created = service.create(ORDER, "k1", SHOP)

    found = service.get(created.payment_intent_id)

    assert found is not None and (found.amount, found.currency) == (1500, "usd")
    assert service.get("pi_unknown") is None


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        # A terminal status is final, whatever comes later.
        (("succeeded", False, T0), ("processing", False, LATER), Decision.IGNORE),
        (("canceled", False, T0), ("succeeded", False, LATER), Decision.IGNORE),
        # Nothing stored yet, or a newer event: apply.
        (("creating", False, None), ("processing", False, T0), Decision.APPLY),
        (("processing", False, T0), ("requires_action", False, LATER), Decision.APPLY),
        # An older event never undoes a newer status.
        (("processing", False, LATER), ("requires_action", False, T0), Decision.IGNORE),
        # The same second: the same state again is harmless, a different one is a tie.
        (("processing", False, T0), ("processing", False, T0), Decision.APPLY),
        (("processing", False, T0), ("requires_action", False, T0), Decision.TIE),
        (
            ("requires_payment_method", False, T0),
            ("requires_payment_method", True, T0),
            Decision.TIE,
        ),
    ],
)
def test_the_ordering_rule(current: tuple[Any, ...], new: tuple[Any, ...], expected: Decision):
    assert decide(*current, *new) is expected


def test_without_stripe_a_tie_goes_to_the_later_lifecycle_step():
    # A failed attempt comes after the requires_action or processing it failed from...
    assert lifecycle_rank("requires_payment_method", True) == 4
    assert lifecycle_rank("processing", False) < 4 < lifecycle_rank("succeeded", False)
    assert lifecycle_rank("a_status_stripe_adds_later", False) == -1
    assert should_apply("processing", T0, "requires_payment_method", T0, new_has_error=True)
    # ...but a fresh requires_payment_method does not undo processing.
    assert not should_apply("processing", T0, "requires_payment_method", T0)
    # Without a tie, the rule itself decides.
    assert should_apply("processing", T0, "requires_action", LATER)
    assert not should_apply("processing", LATER, "succeeded", T0)


def failures(code: str) -> float:
    return REGISTRY.get_sample_value("payment_failures_total", {"code": code}) or 0.0


def successes() -> float:
    return REGISTRY.get_sample_value("payment_success_total") or 0.0


def test_outcomes_are_counted_once_per_change(db):
    declined = {
        "id": "pi_counted",
        "amount": 1500,
        "currency": "usd",
        "status": "requires_payment_method",
        "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds"},
    }
    before = failures("insufficient_funds"), failures("expired_card"), successes()

    processing = {**declined, "status": "processing", "last_payment_error": None}
    with db.begin() as session:
        assert apply_payment_intent(session, processing, T0)
        # The same status again, a second later: stored, not counted again.
        assert apply_payment_intent(session, processing, LATER)
        assert apply_payment_intent(session, declined, LATER + dt.timedelta(seconds=1))
        no_decline_code = {**declined, "last_payment_error": {"code": "expired_card"}}
        assert apply_payment_intent(session, no_decline_code, LATER + dt.timedelta(seconds=2))
        paid = {**declined, "status": "succeeded", "last_payment_error": None}
        assert apply_payment_intent(session, paid, LATER + dt.timedelta(seconds=3))
        assert apply_payment_intent(session, paid, LATER + dt.timedelta(seconds=4)) is False

    after = failures("insufficient_funds"), failures("expired_card"), successes()
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]


def test_a_credential_must_be_a_bearer_key_or_a_session_we_signed():
    clients = (("shop", "s" * 30),)
    keys = (FAST_KEY,)
    identify = partial(
        identify_caller,
        api_clients=clients,
        encryption_keys=keys,
        now=1_800_000_000,
        session_max_age_seconds=3600,
    )
    for malformed in ("Basic c2hvcA==", "Bearer ", "Token " + "s" * 30):
        with pytest.raises(CallerRejected):
            identify(malformed, None)
    assert identify("bearer " + "s" * 30, None) == Caller("client:shop")
    token = new_session_token("cs_abc", 1_800_000_000, keys)
    session = identify(None, f" {token} ")
    assert session == Caller("session:cs_abc")
    assert session.checkout_session_id == "cs_abc"


def test_a_status_read_needs_the_exact_client_secret():
    digest = secret_digest("pi_1_secret_abc")
    assert secret_matches("pi_1_secret_abc", digest)
    assert not secret_matches("pi_1_secret_abd", digest)
    assert not secret_matches(None, digest)
    assert not secret_matches("", digest)
    # A payment created elsewhere has no stored secret: nobody reads it with one.
    assert not secret_matches("pi_1_secret_abc", None)
