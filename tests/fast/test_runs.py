"""One handler run, called directly: what each delivery of a handler task decides, when another
delivery got there first, and what a failure leaves on the run."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.ledger.event_rows import record_event
from shared.ledger.handlers import EventView, HandlerRegistry
from shared.ledger.retry import Retry
from shared.ledger.runs.rows import MAX_ERROR_CHARS, error_text
from shared.ledger.runs.task import RunOutcome, execute_run, record_failure, run_handler_once
from shared.models import RunStatus
from tests.fast.ledger_kit import (
    POLICY,
    Between,
    ago,
    make_event,
    run_rows,
    set_run,
)

TYPE = "fast.runs_event"


@pytest.fixture
def local() -> HandlerRegistry:
    return HandlerRegistry()


@pytest.fixture
def applied(local: HandlerRegistry) -> list[tuple[str, Any]]:
    """Registers ``fast.apply`` (records what it saw) and ``fast.flaky`` (fails as told)."""
    seen: list[tuple[str, Any]] = []

    @local.handles(TYPE, name="fast.apply")
    def _apply(session: Session, event: EventView) -> None:
        timeout = session.execute(text("SHOW statement_timeout")).scalar_one()
        seen.append((event.id, timeout))

    @local.handles(TYPE, name="fast.flaky")
    def _flaky(session: Session, event: EventView) -> None:
        failure = event.object.get("fail")
        if failure == "transient":
            raise ConnectionError("the database blinked")
        if failure == "card":
            raise ValueError("bad input 4242 4242 4242 4242")

    return seen


def recorded(db, cipher, local: HandlerRegistry, **obj: Any) -> str:
    evt = make_event(TYPE, **obj)
    with db.begin() as session:
        assert record_event(session, evt, "webhook", cipher, registry=local)
    return str(evt["id"])


def dead_lettered(handler: str) -> float:
    value = REGISTRY.get_sample_value("handler_runs_dead_lettered_total", {"handler": handler})
    return value or 0.0


def test_the_handler_runs_under_a_statement_timeout_of_the_lease(db, cipher, applied, local):
    event_id = recorded(db, cipher, local)

    assert (
        execute_run(db, event_id, "fast.apply", cipher, policy=POLICY, registry=local)
        is RunOutcome.DONE
    )

    # lease = time limit 20 s + 5 s margin: a stuck query fails instead of outliving the lease.
    assert applied == [(event_id, "25s")]


def test_a_run_finished_by_another_delivery_after_the_claim_is_not_applied(
    db, cipher, applied, local
):
    event_id = recorded(db, cipher, local)
    # The claim commits in the first transaction; another delivery finishes the run before
    # the second one starts.
    other = Between(db, 2, lambda: set_run(db, event_id, "fast.apply", status=RunStatus.DONE))

    outcome = execute_run(
        other.sessions, event_id, "fast.apply", cipher, policy=POLICY, registry=local
    )

    assert outcome is RunOutcome.ALREADY_FINISHED
    assert applied == []
    assert run_rows(db, event_id)["fast.apply"].attempts == 1


def test_a_leased_run_is_looked_at_again_once_its_lease_must_have_ended(db, cipher, applied, local):
    event_id = recorded(db, cipher, local)
    set_run(db, event_id, "fast.apply", leased_until=ago(minutes=-5), attempts=1)

    step = run_handler_once(db, event_id, "fast.apply", cipher, None, POLICY, registry=local)

    assert step == Retry(POLICY.lease_seconds + 1) == Retry(26)
    assert applied == []


def test_a_run_whose_worker_died_on_every_attempt_is_reported_dead(db, cipher, applied, local):
    event_id = recorded(db, cipher, local)
    set_run(db, event_id, "fast.apply", attempts=POLICY.max_transient_attempts, last_error="x")
    before = dead_lettered("fast.apply")

    assert (
        run_handler_once(db, event_id, "fast.apply", cipher, None, POLICY, registry=local) is None
    )

    run = run_rows(db, event_id)["fast.apply"]
    assert run.status == RunStatus.DEAD and run.finished_at is not None
    assert run.last_error is not None and run.last_error.startswith("x\nNo attempts left")
    assert dead_lettered("fast.apply") == before + 1
    assert applied == []


def test_a_missing_or_finished_run_needs_nothing_more(db, cipher, applied, local):
    event_id = recorded(db, cipher, local)
    assert (
        run_handler_once(db, event_id, "fast.nobody", cipher, None, POLICY, registry=local) is None
    )
    assert (
        run_handler_once(db, event_id, "fast.apply", cipher, None, POLICY, registry=local) is None
    )
    assert (
        run_handler_once(db, event_id, "fast.apply", cipher, None, POLICY, registry=local) is None
    )
    assert len(applied) == 1


def test_a_transient_failure_is_retried_after_the_backoff(db, cipher, applied, local):
    event_id = recorded(db, cipher, local, fail="transient")

    first = run_handler_once(db, event_id, "fast.flaky", cipher, None, POLICY, registry=local)
    second = run_handler_once(db, event_id, "fast.flaky", cipher, None, POLICY, registry=local)

    assert (first, second) == (Retry(1), Retry(2))
    run = run_rows(db, event_id)["fast.flaky"]
    assert (run.status, run.attempts, run.leased_until) == (RunStatus.PENDING, 2, None)
    assert run.next_attempt_at is not None
    assert "ConnectionError: the database blinked" in (run.last_error or "")


def test_a_failure_of_a_run_finished_meanwhile_is_not_retried(db, cipher, applied, local):
    event_id = recorded(db, cipher, local, fail="transient")
    # Claim (1), apply that fails (2); before the failure is recorded (3) an operator's replay
    # of the handler finished the run elsewhere.
    other = Between(db, 3, lambda: set_run(db, event_id, "fast.flaky", status=RunStatus.DONE))

    assert (
        run_handler_once(
            other.sessions, event_id, "fast.flaky", cipher, None, POLICY, registry=local
        )
        is None
    )
    assert run_rows(db, event_id)["fast.flaky"].status == RunStatus.DONE


def test_recording_a_failure_on_a_run_that_is_not_pending_changes_nothing(
    db, cipher, applied, local
):
    event_id = recorded(db, cipher, local)
    set_run(db, event_id, "fast.apply", status=RunStatus.DEAD, attempts=2, last_error="old")

    failure = record_failure(db, event_id, "fast.apply", ValueError("late"), POLICY)

    assert (failure.attempts, failure.dead, failure.transient) == (0, False, False)
    run = run_rows(db, event_id)["fast.apply"]
    assert (run.status, run.attempts, run.last_error) == (RunStatus.DEAD, 2, "old")


def test_a_run_for_a_handler_this_release_does_not_have_ends_dead(db, cipher, local):
    evt = make_event(TYPE)
    local.handles(TYPE, name="fast.renamed")(lambda session, event: None)
    with db.begin() as session:
        record_event(session, evt, "webhook", cipher, registry=local)
    # The next release renamed the handler: its runs cannot succeed, so they get the
    # permanent limit (2), not the transient one.
    next_release = HandlerRegistry()

    steps = [
        run_handler_once(db, evt["id"], "fast.renamed", cipher, None, POLICY, registry=next_release)
        for _ in "12"
    ]

    assert steps == [Retry(1), None]
    run = run_rows(db, evt["id"])["fast.renamed"]
    assert run.status == RunStatus.DEAD
    assert "UnknownHandler: fast.renamed" in (run.last_error or "")


def test_a_dead_failure_is_stored_masked_and_reported(db, cipher, applied, local):
    event_id = recorded(db, cipher, local, fail="card")
    before = dead_lettered("fast.flaky")

    steps = [
        run_handler_once(db, event_id, "fast.flaky", cipher, None, POLICY, registry=local)
        for _ in "12"
    ]

    assert steps == [Retry(1), None]
    run = run_rows(db, event_id)["fast.flaky"]
    assert run.status == RunStatus.DEAD
    assert "4242 4242 4242 4242" not in (run.last_error or "")
    assert "ValueError: bad input" in (run.last_error or "")
    assert dead_lettered("fast.flaky") == before + 1


def _ping(n: int, message: str) -> None:
    if n == 0:
        raise RuntimeError(message)
    _pong(n - 1, message)


def _pong(n: int, message: str) -> None:
    _ping(n, message)


def test_an_error_keeps_its_innermost_frames_and_a_bounded_length():
    with pytest.raises(RuntimeError) as short:
        _ping(20, "boom")
    with pytest.raises(RuntimeError) as long:
        _ping(1, "x" * (2 * MAX_ERROR_CHARS))

    summary = error_text(short.value)
    # The innermost eight frames only, of the 42 between the test and the raise.
    assert summary.count("in _ping") + summary.count("in _pong") == 8
    assert summary.rstrip().endswith("RuntimeError: boom")
    bounded = error_text(long.value)
    assert len(bounded) == MAX_ERROR_CHARS and bounded.rstrip().endswith("x" * 100)
