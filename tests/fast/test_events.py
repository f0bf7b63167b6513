"""Recording events, called directly: events without handlers, redelivered messages, legacy
plaintext rows, and the quarantine of bodies no key decrypts until their key arrives."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.infra.crypto import PayloadCipher
from shared.ledger.event_rows import record_event, stored_payload
from shared.ledger.handlers import EventView, HandlerRegistry
from shared.ledger.ingest.first_delivery import ingest_first_delivery
from shared.ledger.ingest.redelivery import ingest
from shared.ledger.recovery.quarantine import (
    Recovery,
    list_quarantined,
    quarantine,
    recover_quarantined,
    undecryptable_countdown,
)
from shared.ledger.retry import Retry
from shared.ledger.runs.apply import apply_claimed_runs
from shared.models import QuarantinedEvent, RunStatus, StripeEvent
from tests.fast.conftest import FAST_KEY
from tests.fast.ledger_kit import (
    POLICY,
    SCOPE,
    Between,
    make_event,
    run_rows,
)

TYPE = "fast.events_event"
# base64 of "key-the-workers-do-not-have-32by": what a web process rolled out first encrypts with.
NEW_KEY = "a2V5LXRoZS13b3JrZXJzLWRvLW5vdC1oYXZlLTMyYnk="
FIRST_ATTEMPT = 1_700_000_000.0


@pytest.fixture
def local() -> HandlerRegistry:
    registry = HandlerRegistry()

    def nothing(session: Session, event: EventView) -> None:
        return None

    registry.handles(TYPE, name="fast.one")(nothing)
    registry.handles(TYPE, name="fast.two")(nothing)
    return registry


@pytest.fixture
def web_cipher() -> PayloadCipher:
    """The web process's keys, one ahead of the workers'."""
    return PayloadCipher((NEW_KEY, FAST_KEY))


def test_an_event_no_handler_wants_is_recorded_without_runs(db, cipher, local):
    evt = make_event("fast.nobody_handles_this")

    result = ingest(db, cipher.encrypt(evt), "webhook", cipher, SCOPE, registry=local)

    assert (result.newly_recorded, result.pending_handlers) == (True, [])
    assert run_rows(db, evt["id"]) == {}
    with db() as session:
        assert session.get(StripeEvent, evt["id"]) is not None


def test_a_redelivery_counts_the_attempts_that_died_uncommitted(db, cipher, local):
    evt = make_event(TYPE)
    lease = dt.timedelta(seconds=60)

    result = ingest(
        db,
        cipher.encrypt(evt),
        "webhook",
        cipher,
        SCOPE,
        claim_lease=lease,
        uncounted_attempts=1,
        registry=local,
    )

    assert result.claimed_handlers == ["fast.one", "fast.two"]
    assert result.recorded is not None and result.recorded.handlers == ["fast.one", "fast.two"]
    assert {run.attempts for run in run_rows(db, evt["id"]).values()} == {2}


def test_a_row_stored_before_encryption_reads_back_as_it_was(db, cipher):
    evt = make_event(TYPE)
    with db.begin() as session:
        session.add(
            StripeEvent(
                id=evt["id"],
                type=TYPE,
                created=dt.datetime.fromtimestamp(evt["created"], dt.UTC),
                livemode=False,
                payload=evt,
                source="webhook",
            )
        )
    with db() as session:
        row = session.get(StripeEvent, evt["id"])
        assert row is not None
        assert stored_payload(row, cipher) == evt


def test_undecryptable_bodies_are_retried_until_the_bound_then_quarantined():
    bound, backoff = 300, 30.0
    assert undecryptable_countdown(FIRST_ATTEMPT, FIRST_ATTEMPT + 10, bound, backoff) == 30.0
    # Never sooner than a second, however small the backoff.
    assert undecryptable_countdown(FIRST_ATTEMPT, FIRST_ATTEMPT + 10, bound, 0.2) == 1.0
    # The last attempt falls on the bound, not past it.
    assert undecryptable_countdown(FIRST_ATTEMPT, FIRST_ATTEMPT + 290, bound, backoff) == 10.0
    assert undecryptable_countdown(FIRST_ATTEMPT, FIRST_ATTEMPT + 300, bound, backoff) is None
    assert undecryptable_countdown(FIRST_ATTEMPT, FIRST_ATTEMPT + 900, bound, backoff) is None


def _quarantined(db, body: str, source: str = "webhook") -> int:
    assert quarantine(db, body, source, attempts=7, first_attempt_at=FIRST_ATTEMPT)
    with db() as session:
        return session.execute(
            select(QuarantinedEvent.id).where(QuarantinedEvent.body == body)
        ).scalar_one()


def test_a_quarantined_body_is_kept_once_as_ciphertext(db, web_cipher):
    evt = make_event(TYPE, note="customer data")
    body = web_cipher.encrypt(evt)

    assert quarantine(db, body, "webhook", attempts=7, first_attempt_at=FIRST_ATTEMPT)
    assert not quarantine(db, body, "webhook", attempts=9, first_attempt_at=FIRST_ATTEMPT + 5)

    (row,) = list_quarantined(db)
    assert (row.body, row.attempts, row.source) == (body, 7, "webhook")
    assert row.first_attempt_at == dt.datetime.fromtimestamp(FIRST_ATTEMPT, dt.UTC)
    assert "customer data" not in row.body and len(row.body_sha256) == 64


def test_a_quarantined_body_is_recovered_once_its_key_is_configured(db, cipher, web_cipher, local):
    evt = make_event(TYPE)
    row_id = _quarantined(db, web_cipher.encrypt(evt), source="reconcile")

    # The workers still lack the key: nothing changes.
    assert recover_quarantined(db, None, cipher, SCOPE, registry=local) == [
        Recovery(row_id, "undecryptable")
    ]
    assert len(list_quarantined(db)) == 1

    recovered = recover_quarantined(db, None, web_cipher, SCOPE, registry=local)

    assert recovered == [Recovery(row_id, "recovered", evt["id"], ("fast.one", "fast.two"))]
    with db() as session:
        stored = session.get(StripeEvent, evt["id"])
        assert stored is not None and stored.source == "reconcile"
    assert list_quarantined(db) == []
    (kept,) = list_quarantined(db, include_recovered=True)
    assert kept.recovered_event_id == evt["id"] and kept.recovered_at is not None
    # A recovered body is not taken again.
    assert recover_quarantined(db, None, web_cipher, SCOPE, registry=local) == []


def test_only_the_named_quarantined_bodies_are_tried(db, web_cipher, local):
    first = _quarantined(db, web_cipher.encrypt(make_event(TYPE)))
    second = _quarantined(db, web_cipher.encrypt(make_event(TYPE)))

    recovered = recover_quarantined(db, [second], web_cipher, SCOPE, registry=local)

    assert [r.quarantine_id for r in recovered] == [second]
    assert [row.id for row in list_quarantined(db)] == [first]


def test_a_quarantined_body_out_of_scope_or_in_plain_json_stays_quarantined(db, web_cipher, local):
    foreign = {**make_event(TYPE), "account": "acct_someone_else"}
    out_of_scope = _quarantined(db, web_cipher.encrypt(foreign))
    plain = _quarantined(db, '{"id": "evt_forged", "type": "payment_intent.succeeded"}')

    recovered = recover_quarantined(db, None, web_cipher, SCOPE, registry=local)

    assert recovered == [
        Recovery(out_of_scope, "account_not_served", foreign["id"]),
        Recovery(plain, "unsigned", None),
    ]
    assert len(list_quarantined(db)) == 2
    with db() as session:
        assert session.get(StripeEvent, foreign["id"]) is None


def test_a_body_another_operator_recovered_meanwhile_is_left_alone(db, web_cipher, local):
    evt = make_event(TYPE)
    row_id = _quarantined(db, web_cipher.encrypt(evt))

    def other_operator() -> None:
        with db.begin() as session:
            row = session.get(QuarantinedEvent, row_id)
            assert row is not None
            row.recovered_at = dt.datetime.now(dt.UTC)

    # The rows to try are chosen in the first session; the other operator acts before the second.
    racing = Between(db, 2, other_operator)

    assert recover_quarantined(racing.sessions, None, web_cipher, SCOPE, registry=local) == [
        Recovery(row_id, "recovered")
    ]
    with db() as session:
        assert session.get(StripeEvent, evt["id"]) is None


def test_an_event_recorded_meanwhile_is_recovered_without_a_second_row(db, web_cipher, local):
    evt = make_event(TYPE)
    row_id = _quarantined(db, web_cipher.encrypt(evt))
    # Stripe delivered it again with the new key in place before the operator's retry.
    with db.begin() as session:
        assert record_event(session, evt, "webhook", web_cipher, registry=local)

    (recovery,) = recover_quarantined(db, None, web_cipher, SCOPE, registry=local)

    assert recovery == Recovery(row_id, "recovered", evt["id"], ("fast.one", "fast.two"))
    with db() as session:
        stored = session.get(StripeEvent, evt["id"])
        assert stored is not None and stored.source == "webhook"


def test_a_first_delivery_is_recorded_and_applied_in_one_go(db, cipher, local):
    applied: list[str] = []
    local.handles("fast.first_delivery", name="fast.apply")(
        lambda session, event: applied.append(event.id)
    )
    evt = make_event("fast.first_delivery")
    body = cipher.encrypt(evt)

    result, outcome = ingest_first_delivery(
        db, body, "webhook", cipher, SCOPE, None, POLICY, registry=local
    )

    assert (result.newly_recorded, result.pending_handlers, outcome.done) == (
        True,
        [],
        ["fast.apply"],
    )
    run = run_rows(db, evt["id"])["fast.apply"]
    assert (run.status, run.attempts) == (RunStatus.DONE, 1)
    # The broker may deliver a "first" delivery twice: the second applies nothing.
    again, nothing_done = ingest_first_delivery(
        db, body, "webhook", cipher, SCOPE, None, POLICY, registry=local
    )
    assert (again.newly_recorded, again.pending_handlers, nothing_done.done) == (False, [], [])
    assert applied == [evt["id"]]


def test_claimed_runs_that_all_fail_are_counted_and_none_marked_done(db, cipher, local):
    def broken(session: Session, event: EventView) -> None:
        raise ConnectionError("Stripe is away")

    local.handles("fast.all_fail", name="fast.broken_one")(broken)
    local.handles("fast.all_fail", name="fast.broken_two")(broken)
    evt = make_event("fast.all_fail")
    result = ingest(
        db,
        cipher.encrypt(evt),
        "webhook",
        cipher,
        SCOPE,
        claim_lease=dt.timedelta(seconds=60),
        registry=local,
    )
    assert result.recorded is not None

    outcome = apply_claimed_runs(
        db, result.recorded, result.claimed_handlers, None, POLICY, registry=local
    )

    assert outcome.done == [] and outcome.dead == []
    assert outcome.retries == {"fast.broken_one": Retry(1), "fast.broken_two": Retry(1)}
    assert {run.status for run in run_rows(db, evt["id"]).values()} == {RunStatus.PENDING}
