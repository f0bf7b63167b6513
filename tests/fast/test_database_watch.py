"""A worker's database watch: it stops taking work when a probe fails and takes work again when
one succeeds, asking again when the worker did not confirm. And the engine's fail-fast connect:
after a connect that waited out its timeout on a server that never answers (a real socket that
accepts and stays silent), the next ones fail at once for as long as that timeout."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from shared.db import DatabaseBounds, make_engine
from shared.infra.database_watch import DatabaseWatch


class Worker:
    def __init__(self) -> None:
        self.reachable = True
        self.confirms = True
        self.calls: list[str] = []

    def probe(self) -> None:
        if not self.reachable:
            raise ConnectionError("connection to server failed: timeout expired\nmore detail")

    def pause(self) -> bool:
        self.calls.append("pause")
        return self.confirms

    def resume(self) -> bool:
        self.calls.append("resume")
        return self.confirms


def watch(worker: Worker) -> DatabaseWatch:
    return DatabaseWatch(worker.probe, worker.pause, worker.resume, interval_seconds=5)


def test_the_worker_stops_taking_work_while_its_database_does_not_answer(caplog):
    worker = Worker()
    dog = watch(worker)
    dog.check()
    assert worker.calls == []
    worker.reachable = False
    with caplog.at_level("WARNING"):
        dog.check()
        dog.check()
    assert worker.calls == ["pause"]
    assert "database unreachable (connection to server failed: timeout expired)" in caplog.text
    worker.reachable = True
    dog.check()
    dog.check()
    assert worker.calls == ["pause", "resume"]
    assert "takes work again" in caplog.text


def test_a_switch_the_worker_did_not_confirm_is_asked_again():
    worker = Worker()
    dog = watch(worker)
    worker.reachable, worker.confirms = False, False
    dog.check()
    dog.check()
    assert worker.calls == ["pause", "pause"]
    worker.confirms = True
    dog.check()
    dog.check()
    assert worker.calls == ["pause", "pause", "pause"]
    worker.reachable, worker.confirms = True, False
    dog.check()
    dog.check()
    worker.confirms = True
    dog.check()
    dog.check()
    assert worker.calls == ["pause", "pause", "pause", "resume", "resume", "resume"]


def test_a_pause_whose_reply_was_lost_is_still_undone_once_the_database_answers():
    """The command may have reached the worker although its reply did not reach the watch."""
    worker = Worker()
    dog = watch(worker)
    worker.reachable, worker.confirms = False, False
    dog.check()
    worker.reachable, worker.confirms = True, True
    dog.check()
    assert worker.calls == ["pause", "resume"]
    dog.check()
    assert worker.calls == ["pause", "resume"]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never says a word, as a host behind a partition
    looks to libpq once the handshake is past."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def _connect_takes(engine) -> tuple[float, str]:
    started = time.monotonic()
    with pytest.raises(OperationalError) as failure, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return time.monotonic() - started, str(failure.value)


def test_after_a_connect_timed_out_the_next_ones_fail_at_once_for_that_long(silent_server):
    engine = make_engine(
        f"postgresql+psycopg2://nobody@127.0.0.1:{silent_server}/none",
        bounds=DatabaseBounds(connect_seconds=2),
    )
    try:
        first, _ = _connect_takes(engine)
        second, error = _connect_takes(engine)
        assert first > 1.0
        assert second < 0.5 and "database unreachable: a connect timed out" in error
        time.sleep(2.0)  # the window itself: what is asserted is what follows it
        third, error = _connect_takes(engine)
        assert third > 1.0 and "timeout expired" in error
    finally:
        engine.dispose()


def test_a_refused_connect_does_not_make_the_next_ones_fail_fast():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    engine = make_engine(f"postgresql+psycopg2://nobody@127.0.0.1:{port}/none")
    try:
        for _ in range(2):
            _, error = _connect_takes(engine)
            assert "refused" in error
    finally:
        engine.dispose()
