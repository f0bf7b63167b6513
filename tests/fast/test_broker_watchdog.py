"""The broker watchdog's rule, with a clock and a probe of the test's: a worker exits only once
its broker has been out of reach for the whole bound, and a success starts the count again."""

from __future__ import annotations

import pytest

from shared.infra.broker_watchdog import BrokerWatchdog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watchdog(clock: Clock, reachable: list[bool], exits: list[int]) -> BrokerWatchdog:
    def probe() -> None:
        if not reachable[0]:
            raise ConnectionError("no route to the broker")

    return BrokerWatchdog(
        probe, bound_seconds=60, interval_seconds=5, exit=exits.append, clock=clock
    )


def test_the_worker_exits_69_once_the_broker_is_out_of_reach_for_the_bound(caplog):
    clock, reachable, exits = Clock(), [False], list[int]()
    dog = watchdog(clock, reachable, exits)
    last = clock.now
    clock.now += 59
    assert dog.check(last) == last and exits == []
    clock.now += 1
    with caplog.at_level("CRITICAL"):
        dog.check(last)
    assert exits == [69]
    assert "broker unreachable for 60 s" in caplog.text
    assert "no route to the broker" in caplog.text


@pytest.mark.parametrize("gap", [0, 30])
def test_a_probe_that_reaches_the_broker_starts_the_count_again(gap):
    clock, reachable, exits = Clock(), [True], list[int]()
    dog = watchdog(clock, reachable, exits)
    clock.now += gap
    last = dog.check(clock.now - 100)
    assert last == clock.now
    reachable[0] = False
    clock.now += 59
    dog.check(last)
    assert exits == []
