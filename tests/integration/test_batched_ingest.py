"""The real worker ingests a burst of first deliveries in batches (shared.infra.task_batches):
fewer transactions than events, every event applied once, and a pool process lost mid-batch
loses nothing (its batch goes back to the queue and each event runs alone)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import text

from devtools import stripe_events
from devtools.processes import wait_until
from shared.infra.broker import EVENTS_QUEUE, make_producer
from tests.conftest import WEBHOOK_SECRET
from tests.integration.test_delivery_guarantees import calls, effects, runs


@contextlib.contextmanager
def events_held(settings) -> Iterator[None]:
    """The worker stops taking from the events queue until the block ends, so what is sent
    meanwhile reaches it as one burst."""
    producer = make_producer(settings)
    try:
        assert producer.control.cancel_consumer(EVENTS_QUEUE, reply=True, timeout=10)
        yield
    finally:
        producer.control.add_consumer(EVENTS_QUEUE, reply=True, timeout=10)
        producer.close()


def send_burst(api, event_type: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        event = stripe_events.event(
            event_type, {"id": stripe_events.new_id("obj"), "object": "test"}
        )
        assert api.post_webhook(*stripe_events.signed(event, WEBHOOK_SECRET)).status_code == 200
        ids.append(event["id"])
    return ids


def transactions(sessions, event_ids: list[str]) -> int:
    """How many transactions recorded these events (rows one transaction wrote share xmin)."""
    with sessions() as session:
        query = text("SELECT count(DISTINCT xmin::text) FROM stripe_events WHERE id = ANY(:ids)")
        return int(session.execute(query, {"ids": event_ids}).scalar_one())


def all_done(sessions, event_ids: list[str], handlers: set[str]) -> bool:
    for event_id in event_ids:
        current = runs(sessions, event_id)
        if set(current) != handlers or {run.status for run in current.values()} != {"done"}:
            return False
    return True


def test_a_burst_is_ingested_in_batches_with_each_handler_called_once(
    api, sessions, settings, settle
):
    with events_held(settings):
        ids = send_burst(api, "test.flaky", 40)

    handlers = {"tests.flaky", "tests.effect"}
    wait_until(lambda: all_done(sessions, ids, handlers), 60, "the burst applied", interval=0.2)
    settle()

    for event_id in ids:
        assert effects(sessions, event_id) == sorted(handlers)
        assert {run.attempts for run in runs(sessions, event_id).values()} == {1}
        assert calls(sessions, event_id, "tests.flaky") == 1
        assert calls(sessions, event_id, "tests.effect") == 1
    # Batched: without it each event is a transaction of its own.
    assert transactions(sessions, ids) < len(ids) / 4


def test_a_pool_process_lost_mid_batch_loses_nothing_and_undercounts_nothing(
    api, sessions, settings, settle
):
    with events_held(settings):
        # Two slow events first: they occupy both pool processes as the burst arrives, so what
        # comes behind them (the crash among it) is held and sent in batches, not one by one.
        slow = send_burst(api, "test.slow", 2)
        ids = send_burst(api, "test.flaky", 15)
        crash = send_burst(api, "test.crash_once", 1)[0]
        ids += send_burst(api, "test.flaky", 15)

    handlers = {"tests.flaky", "tests.effect"}
    wait_until(lambda: all_done(sessions, ids, handlers), 90, "the burst applied", interval=0.2)
    wait_until(lambda: all_done(sessions, [crash], {"tests.crashing_once"}), 90, "crash event")
    wait_until(lambda: all_done(sessions, slow, {"tests.slow"}), 90, "the slow events")
    settle()

    # The killed batch's transaction left nothing; its events came back redelivered and each
    # ran alone, counting the attempt the lost one may have made.
    assert effects(sessions, crash) == ["tests.crashing_once"]
    assert calls(sessions, crash, "tests.crashing_once") == 2
    assert runs(sessions, crash)["tests.crashing_once"].attempts == 2
    redelivered = 0
    for event_id in ids:
        assert effects(sessions, event_id) == sorted(handlers)
        for handler, run in runs(sessions, event_id).items():
            assert run.attempts >= calls(sessions, event_id, handler) >= 1
            redelivered += run.attempts == 2
    # The lost batch held other events than the crashing one; they came back too.
    assert redelivered > 0
