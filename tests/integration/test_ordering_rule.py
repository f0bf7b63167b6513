"""The rule that decides whether an event's status replaces the stored one."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.payments import STATUS_PRECEDENCE, TERMINAL_STATUSES, should_apply

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=1)


@pytest.mark.parametrize(
    ("terminal", "later"),
    [(t, s) for t in sorted(TERMINAL_STATUSES) for s in sorted(STATUS_PRECEDENCE) if s != t],
)
def test_terminal_status_is_never_left(terminal, later):
    assert should_apply(terminal, T0, later, T1) is False


def test_newer_event_wins():
    assert should_apply("requires_action", T0, "requires_payment_method", T1) is True


def test_older_event_loses():
    assert should_apply("processing", T1, "requires_action", T0) is False


def test_unknown_current_time_accepts():
    assert should_apply("requires_payment_method", None, "processing", T0) is True


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        ("processing", "requires_action", False),
        ("requires_action", "processing", True),
        ("processing", "succeeded", True),
        ("requires_payment_method", "requires_payment_method", True),
    ],
)
def test_same_second_prefers_later_lifecycle_status(current, new, expected):
    assert should_apply(current, T0, new, T0) is expected


@pytest.mark.parametrize("before", ["requires_action", "processing"])
def test_same_second_failure_after_an_attempt_wins(before):
    # payment_failed (requires_payment_method with an error) in the second of the attempt.
    assert should_apply(before, T0, "requires_payment_method", T0, new_has_error=True) is True
    assert should_apply("requires_payment_method", T0, before, T0, current_has_error=True) is False


def test_same_second_new_attempt_without_error_does_not_beat_progress():
    assert should_apply("requires_action", T0, "requires_payment_method", T0) is False
