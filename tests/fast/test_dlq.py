"""The dead-letter list, replays and the sweeper, called directly: which runs each one picks,
what it changes on them, and what it leaves to an operator who got there first."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session

from shared.ledger.event_rows import EventNotFound, record_event
from shared.ledger.event_rules import EventRefused
from shared.ledger.handlers import EventView, HandlerRegistry, UnknownHandler
from shared.ledger.recovery.dead_letters import (
    ListedRun,
    RunFilter,
    count_dead,
    list_dead,
    parse_run_id,
    replay_dead,
)
from shared.ledger.recovery.replay import replay_event
from shared.ledger.recovery.sweeper import sweep_pending
from shared.models import RunStatus, StripeEvent
from tests.fast.ledger_kit import (
    SCOPE,
    Between,
    ago,
    make_event,
    run_rows,
    set_run,
)

PAID, REFUNDED = "fast.dlq_paid", "fast.dlq_refunded"


@pytest.fixture
def local() -> HandlerRegistry:
    registry = HandlerRegistry()

    def nothing(session: Session, event: EventView) -> None:
        return None

    registry.handles(PAID, name="fast.ship")(nothing)
    registry.handles(PAID, REFUNDED, name="fast.notify")(nothing)
    return registry


def recorded(db, cipher, local: HandlerRegistry, event_type: str = PAID) -> str:
    evt = make_event(event_type)
    with db.begin() as session:
        assert record_event(session, evt, "webhook", cipher, registry=local)
    return str(evt["id"])


def dead(db, event_id: str, handler: str, error: str = "ValueError: bug", **values: Any) -> None:
    set_run(db, event_id, handler, status=RunStatus.DEAD, attempts=2, last_error=error, **values)


def run_ids(rows: list[ListedRun]) -> list[str]:
    return [row.run_id for row in rows]


def test_dead_runs_are_listed_by_type_handler_age_and_error(db, cipher, local):
    paid, refunded = recorded(db, cipher, local), recorded(db, cipher, local, REFUNDED)
    dead(db, paid, "fast.ship", "Traceback\n  ...\nKeyError: 'sku'\n\n", updated_at=ago(days=2))
    dead(db, paid, "fast.notify", "ConnectionError: 100% of retries used")
    dead(db, refunded, "fast.notify")

    everything = list_dead(db, RunFilter())
    # Oldest first.
    assert run_ids(everything)[0] == f"{paid}/fast.ship"
    assert sorted(run_ids(everything)[1:]) == sorted(
        [f"{paid}/fast.notify", f"{refunded}/fast.notify"]
    )
    assert count_dead(db) == 3
    assert run_ids(list_dead(db, RunFilter(event_type=REFUNDED))) == [f"{refunded}/fast.notify"]
    assert run_ids(list_dead(db, RunFilter(handler="fast.ship"))) == [f"{paid}/fast.ship"]
    assert len(list_dead(db, RunFilter(since=ago(days=1)))) == 2
    # The text is matched literally: "%" is not a wildcard.
    assert run_ids(list_dead(db, RunFilter(error_contains="100%"))) == [f"{paid}/fast.notify"]
    assert list_dead(db, RunFilter(error_contains="1%0")) == []
    assert len(list_dead(db, RunFilter(), limit=1)) == 1
    first = everything[0]
    assert (first.event_type, first.status, first.attempts) == (PAID, RunStatus.DEAD, 2)
    assert first.error_line == "KeyError: 'sku'"


def test_the_error_line_of_a_run_without_an_error_is_empty():
    row = ListedRun("evt_1", "h", "t", "dead", 1, 0, ago(seconds=1), None)
    assert row.error_line == ""
    assert ListedRun("evt_1", "h", "t", "dead", 1, 0, ago(seconds=1), " \n ").error_line == ""


def test_a_run_id_names_one_run_and_an_event_id_all_of_its_runs():
    assert parse_run_id("evt_1/fast.ship") == ("evt_1", "fast.ship")
    assert parse_run_id("evt_1") == ("evt_1", None)
    with pytest.raises(ValueError, match="not a run id"):
        parse_run_id("pi_1/fast.ship")


def test_a_dry_run_shows_the_runs_a_replay_would_take_and_changes_nothing(db, cipher, local):
    event_id = recorded(db, cipher, local)
    dead(db, event_id, "fast.ship")
    sent: list[tuple[str, str]] = []

    shown = replay_dead(db, filters=RunFilter(), dry_run=True, enqueue=lambda *r: sent.append(r))

    assert run_ids(shown) == [f"{event_id}/fast.ship"]
    assert sent == []
    assert run_rows(db, event_id)["fast.ship"].status == RunStatus.DEAD


def test_an_event_id_replays_every_dead_run_of_that_event_only(db, cipher, local):
    chosen, other = recorded(db, cipher, local), recorded(db, cipher, local)
    for event_id in (chosen, other):
        dead(db, event_id, "fast.ship", next_attempt_at=ago(seconds=1), finished_at=ago(seconds=1))
        dead(db, event_id, "fast.notify")
    sent: list[tuple[str, str]] = []

    replay_dead(db, run_ids=[chosen], enqueue=lambda *run: sent.append(run))

    assert sorted(sent) == [(chosen, "fast.notify"), (chosen, "fast.ship")]
    revived = run_rows(db, chosen)["fast.ship"]
    assert (revived.status, revived.attempts, revived.replays) == (RunStatus.PENDING, 0, 1)
    assert (revived.next_attempt_at, revived.finished_at, revived.leased_until) == (None,) * 3
    assert {run.status for run in run_rows(db, other).values()} == {RunStatus.DEAD}


def test_a_large_replay_goes_in_batches_and_reports_its_progress(db, cipher, local):
    events = [recorded(db, cipher, local) for _ in range(3)]
    for event_id in events:
        dead(db, event_id, "fast.ship")
    progress: list[int] = []

    chosen = replay_dead(
        db, filters=RunFilter(handler="fast.ship"), batch_size=2, progress=progress.append
    )

    assert progress == [2, 1]
    assert len(chosen) == 3
    assert count_dead(db) == 0


def test_a_run_another_operator_replayed_meanwhile_is_not_sent_twice(db, cipher, local):
    event_id = recorded(db, cipher, local)
    dead(db, event_id, "fast.ship")
    dead(db, event_id, "fast.notify")
    # Between the listing (first session) and the reset (second), someone else replays one.
    other = Between(db, 2, lambda: set_run(db, event_id, "fast.ship", status=RunStatus.PENDING))
    sent: list[tuple[str, str]] = []

    chosen = replay_dead(other.sessions, filters=RunFilter(), enqueue=lambda *r: sent.append(r))

    assert len(chosen) == 2
    assert sent == [(event_id, "fast.notify")]
    assert run_rows(db, event_id)["fast.ship"].replays == 0


def test_replaying_an_event_reruns_what_has_not_finished_and_handlers_added_since(
    db, cipher, local
):
    event_id = recorded(db, cipher, local)
    dead(db, event_id, "fast.ship")
    set_run(db, event_id, "fast.notify", status=RunStatus.DONE)
    # A handler added after the event arrived: it has no run yet.
    local.handles(PAID, name="fast.audit")(lambda session, event: None)
    sent: list[tuple[str, str]] = []

    names = replay_event(
        db, event_id, cipher=cipher, enqueue=lambda *run: sent.append(run), registry=local
    )

    assert sorted(names) == ["fast.audit", "fast.ship"]
    assert sorted(sent) == [(event_id, "fast.audit"), (event_id, "fast.ship")]
    rows = run_rows(db, event_id)
    assert rows["fast.audit"].status == rows["fast.ship"].status == RunStatus.PENDING
    assert rows["fast.notify"].status == RunStatus.DONE
    # Asked again, the pending runs are sent again (their message may be the one that was
    # lost) and the finished one is still left alone.
    assert sorted(replay_event(db, event_id, cipher=cipher, registry=local)) == [
        "fast.audit",
        "fast.ship",
    ]
    assert run_rows(db, event_id)["fast.ship"].replays == 1


def test_replaying_one_handler_reruns_it_even_when_it_finished(db, cipher, local):
    event_id = recorded(db, cipher, local)
    set_run(db, event_id, None, status=RunStatus.DONE)

    assert replay_event(db, event_id, cipher=cipher, handler="fast.notify", registry=local) == [
        "fast.notify"
    ]

    rows = run_rows(db, event_id)
    assert (rows["fast.notify"].status, rows["fast.notify"].replays) == (RunStatus.PENDING, 1)
    assert rows["fast.ship"].status == RunStatus.DONE


def test_a_replay_naming_an_unknown_handler_or_event_changes_nothing(db, cipher, local):
    event_id = recorded(db, cipher, local)
    set_run(db, event_id, None, status=RunStatus.DONE)

    with pytest.raises(UnknownHandler):
        replay_event(db, event_id, cipher=cipher, handler="fast.shp", registry=local)
    with pytest.raises(EventNotFound):
        replay_event(db, "evt_never_seen", cipher=cipher, registry=local)
    assert {run.status for run in run_rows(db, event_id).values()} == {RunStatus.DONE}


def test_an_event_we_never_received_is_fetched_recorded_and_run(db, cipher, local):
    evt = make_event(PAID)
    fetched: list[str] = []

    def fetch(event_id: str) -> dict[str, Any]:
        fetched.append(event_id)
        return evt

    names = replay_event(
        db, evt["id"], cipher=cipher, fetch_event=fetch, scope=SCOPE, registry=local
    )

    assert fetched == [evt["id"]]
    assert sorted(names) == ["fast.notify", "fast.ship"]
    with db() as session:
        row = session.get(StripeEvent, evt["id"])
        assert row is not None and row.source == "replay"
    assert set(run_rows(db, evt["id"])) == {"fast.notify", "fast.ship"}


def test_a_fetched_event_out_of_scope_is_refused_and_not_recorded(db, cipher, local):
    evt = {**make_event(PAID), "account": "acct_someone_else"}
    refused = {"reason": "account_not_served", "stage": "replay"}
    before = REGISTRY.get_sample_value("events_refused_total", refused) or 0.0

    with pytest.raises(EventRefused) as caught:
        replay_event(
            db, evt["id"], cipher=cipher, fetch_event=lambda _: evt, scope=SCOPE, registry=local
        )

    assert caught.value.code == "account_not_served"
    assert REGISTRY.get_sample_value("events_refused_total", refused) == before + 1
    with db() as session:
        assert session.get(StripeEvent, evt["id"]) is None


def test_the_sweeper_skips_leased_scheduled_and_finished_runs_and_sends_each_once(
    db, cipher, local
):
    lost, leased, scheduled, finished = (recorded(db, cipher, local) for _ in range(4))
    for event_id in (lost, leased, scheduled, finished):
        set_run(db, event_id, None, updated_at=ago(hours=1), created_at=ago(hours=1))
    set_run(db, leased, None, leased_until=ago(minutes=-5))
    set_run(db, scheduled, None, next_attempt_at=ago(minutes=-5))
    set_run(db, finished, None, status=RunStatus.DONE)
    # A lease that ran out is no protection: its worker is gone.
    set_run(db, lost, "fast.notify", leased_until=ago(minutes=30))

    swept = sweep_pending(db, older_than_seconds=300)

    assert sorted(swept) == [(lost, "fast.notify"), (lost, "fast.ship")]
    # Marked touched: the next pass leaves them alone until the threshold passes again.
    assert sweep_pending(db, older_than_seconds=300) == []


def test_the_sweeper_sends_at_most_its_limit_per_pass(db, cipher, local):
    for _ in range(2):
        event_id = recorded(db, cipher, local)
        set_run(db, event_id, None, updated_at=ago(hours=1))

    passes = [sweep_pending(db, older_than_seconds=300, limit=3) for _ in range(3)]

    assert [len(swept) for swept in passes] == [3, 1, 0]
    assert len(set(passes[0] + passes[1])) == 4
