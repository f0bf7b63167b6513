"""The reconciler, called directly with a list of Stripe's events and an injected clock: where
each pass starts, what it records, where it leaves its checkpoint, and the Events API paging."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
import stripe
from prometheus_client import REGISTRY
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from shared.config import STRIPE_EVENTS_RETENTION_SECONDS
from shared.ledger.event_rows import EventNotFound
from shared.ledger.handlers import EventView, HandlerRegistry
from shared.ledger.recovery import reconcile as reconciler
from shared.ledger.recovery.reconcile import (
    ADVISORY_LOCK_KEY,
    CHECKPOINT_NAME,
    PAGE_SIZE,
    StripeEventSource,
    reconcile,
)
from shared.models import ReconcileCheckpoint, StripeEvent
from tests.fast.ledger_kit import SCOPE, make_event

TYPE = "fast.reconcile_event"
NOW = 1_700_100_000.0
OVERLAP, LOOKBACK = 300, 3600


@pytest.fixture
def local() -> HandlerRegistry:
    registry = HandlerRegistry()

    def nothing(session: Session, event: EventView) -> None:
        return None

    registry.handles(TYPE, name="fast.reconciled")(nothing)
    return registry


@dataclass
class Listed:
    """Stripe's event list: what each pass asked for, and what it gets."""

    events: list[dict[str, Any]]
    asked: list[int] = field(default_factory=list)

    def events_since(self, created_gte: int) -> list[dict[str, Any]]:
        self.asked.append(created_gte)
        return [e for e in self.events if e["created"] >= created_gte]


def run(
    db, cipher, local: HandlerRegistry, source: Listed, **kwargs: Any
) -> reconciler.ReconcileResult:
    options: dict[str, Any] = {
        "overlap_seconds": OVERLAP,
        "lookback_seconds": LOOKBACK,
        "cipher": cipher,
        "scope": SCOPE,
        "now": lambda: NOW,
    }
    return reconcile(db, source, **{**options, **kwargs}, registry=local)


def checkpoint(db) -> dt.datetime | None:
    with db() as session:
        row = session.get(ReconcileCheckpoint, CHECKPOINT_NAME)
        return None if row is None else row.last_event_created


def at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def recorded_ids(db) -> set[str]:
    with db() as session:
        return set(session.execute(select(StripeEvent.id)).scalars())


def test_the_first_pass_looks_back_and_later_ones_start_at_the_checkpoint(db, cipher, local):
    first = Listed([make_event(TYPE, created=int(NOW) - 100)])
    run(db, cipher, local, first)
    assert first.asked == [int(NOW) - LOOKBACK]
    assert checkpoint(db) == at(NOW - 100)

    second = Listed([])
    run(db, cipher, local, second)
    assert second.asked == [int(NOW) - 100 - OVERLAP]
    # An operator's explicit start wins over the checkpoint.
    third = Listed([])
    result = run(db, cipher, local, third, since=at(NOW - 50))
    assert third.asked == [int(NOW) - 50] and result.since == at(NOW - 50)


def test_a_pass_never_asks_for_more_than_stripe_keeps(db, cipher, local):
    source = Listed([])

    result = run(db, cipher, local, source, since=at(NOW - 90 * 24 * 3600))

    assert result.since == at(NOW - STRIPE_EVENTS_RETENTION_SECONDS + 60)
    assert source.asked == [int(NOW - STRIPE_EVENTS_RETENTION_SECONDS + 60)]


def test_the_checkpoint_never_moves_backwards(db, cipher, local):
    run(db, cipher, local, Listed([make_event(TYPE, created=int(NOW) - 100)]))

    # An on-demand pass over an older window records what it finds there...
    old = make_event(TYPE, created=int(NOW) - 2000)
    run(db, cipher, local, Listed([old]), since=at(NOW - 3000))

    # ...and leaves the checkpoint where it was.
    assert old["id"] in recorded_ids(db)
    assert checkpoint(db) == at(NOW - 100)


def test_events_out_of_scope_are_counted_skipped_and_passed(db, cipher, local):
    other_mode = {**make_event(TYPE, created=int(NOW) - 300), "livemode": True}
    served = {**make_event(TYPE, created=int(NOW) - 200), "account": "acct_served"}
    labels = {"reason": "livemode_mismatch", "stage": "reconcile"}
    before = REGISTRY.get_sample_value("events_refused_total", labels) or 0.0

    result = run(db, cipher, local, Listed([other_mode, served]))

    assert (result.listed, result.recovered) == (2, 1)
    assert recorded_ids(db) == {served["id"]}
    assert REGISTRY.get_sample_value("events_refused_total", labels) == before + 1
    # Refused on purpose, for good: no reason to list it again.
    assert checkpoint(db) == at(NOW - 200)


def test_an_event_listed_twice_is_recorded_once(db, cipher, local):
    # Paging over a list that changes under it can return an event twice.
    evt = make_event(TYPE, created=int(NOW) - 100)

    result = run(db, cipher, local, Listed([evt, dict(evt)]))

    assert (result.listed, result.recovered) == (2, 1)
    assert result.pending_runs == [(evt["id"], "fast.reconciled")]
    # The next pass lists it again (the overlap): nothing new, nothing to enqueue.
    again = run(db, cipher, local, Listed([evt]))
    assert (again.listed, again.recovered, again.pending_runs) == (1, 0, [])


def test_one_unrecordable_event_holds_the_checkpoint_but_not_the_others(
    db, cipher, local, monkeypatch
):
    monkeypatch.setattr(reconciler, "PAGE_SIZE", 2)
    events = [make_event(TYPE, created=int(NOW) - 500 + n) for n in range(5)]
    events[2] = {**events[2], "type": "x" * 300}  # longer than the column: cannot be stored
    last_success = REGISTRY.get_sample_value("reconcile_last_success_timestamp_seconds")

    result = run(db, cipher, local, Listed(events))

    assert (result.listed, result.recovered) == (5, 4)
    assert recorded_ids(db) == {e["id"] for n, e in enumerate(events) if n != 2}
    # The pass reached the end, but the checkpoint stays before the event it could not record,
    # and the pass is not a success for the stale-reconciler alert.
    assert checkpoint(db) == at(NOW - 500 + 1)
    assert REGISTRY.get_sample_value("reconcile_last_success_timestamp_seconds") == last_success


def test_a_clean_pass_is_marked_as_the_last_success(db, cipher, local):
    run(db, cipher, local, Listed([make_event(TYPE, created=int(NOW) - 10)]), now=lambda: NOW + 1)
    assert REGISTRY.get_sample_value("reconcile_last_success_timestamp_seconds") == NOW + 1


def test_a_second_reconciler_skips_its_pass_while_one_runs(db, cipher, local, fast_engine: Engine):
    source = Listed([make_event(TYPE, created=int(NOW) - 10)])
    with fast_engine.connect() as other:
        assert other.execute(
            text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY}
        ).scalar()
        try:
            result = run(db, cipher, local, source)
        finally:
            other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})

    assert result.skipped and (result.listed, result.recovered) == (0, 0)
    assert source.asked == []
    assert recorded_ids(db) == set()
    # The lock was free again for the next pass.
    assert not run(db, cipher, local, source).skipped


@dataclass
class Page:
    data: list[Any]
    has_more: bool


class StripeObject:
    def __init__(self, **values: Any) -> None:
        self.values = values

    def to_dict(self) -> dict[str, Any]:
        return self.values


class FakeEventsApi:
    """``client.v1.events``: ``list`` in pages, ``retrieve`` by id."""

    def __init__(self, pages: list[Page], retrieve_error: Exception | None = None) -> None:
        self.pages = pages
        self.params: list[dict[str, Any]] = []
        self.retrieve_error = retrieve_error

    def list(self, params: dict[str, Any]) -> Page:
        self.params.append(dict(params))
        return self.pages[len(self.params) - 1]

    def retrieve(self, event_id: str) -> StripeObject:
        if self.retrieve_error is not None:
            raise self.retrieve_error
        return StripeObject(id=event_id, object="event")


class FakeClient:
    def __init__(self, events: FakeEventsApi) -> None:
        self.v1 = type("V1", (), {"events": events})()


def test_the_event_list_is_paged_after_the_last_id_seen():
    api = FakeEventsApi(
        [
            Page([StripeObject(id="evt_1"), StripeObject(id="evt_2")], has_more=True),
            Page([StripeObject(id="evt_3")], has_more=True),
            Page([], has_more=True),  # has_more with nothing in it must still end
        ]
    )

    listed = list(StripeEventSource(FakeClient(api)).events_since(1_700_000_000))

    assert [e["id"] for e in listed] == ["evt_1", "evt_2", "evt_3"]
    assert [p.get("starting_after") for p in api.params] == [None, "evt_2", "evt_3"]
    assert all(p["created"] == {"gte": 1_700_000_000} for p in api.params)
    assert api.params[0]["limit"] == PAGE_SIZE


def test_the_list_stops_at_the_last_page():
    api = FakeEventsApi([Page([StripeObject(id="evt_1")], has_more=False)])
    assert len(list(StripeEventSource(FakeClient(api)).events_since(0))) == 1
    assert len(api.params) == 1


def test_retrieving_an_event_stripe_does_not_have_is_event_not_found():
    found = StripeEventSource(FakeClient(FakeEventsApi([])))
    assert found.retrieve("evt_1") == {"id": "evt_1", "object": "event"}

    missing = stripe.InvalidRequestError("No such event", "id", http_status=404)
    with pytest.raises(EventNotFound):
        StripeEventSource(FakeClient(FakeEventsApi([], missing))).retrieve("evt_x")

    refused = stripe.InvalidRequestError("Invalid API key", "id", http_status=401)
    with pytest.raises(stripe.InvalidRequestError):
        StripeEventSource(FakeClient(FakeEventsApi([], refused))).retrieve("evt_x")
