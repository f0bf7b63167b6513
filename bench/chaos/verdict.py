"""The chaos suite's verdict: runs lost or applied twice, dead letters, the table, PASS or FAIL."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, create_engine, text

from bench.chaos.effects import EffectsTally, effects_ok
from bench.chaos.load import Ledger, LoadGenerator
from bench.chaos.stack import Stack, log
from shared.config import load_settings
from shared.infra.stripe_gateway import make_stripe_client
from shared.ledger.handlers import registry
from shared.ledger.recovery.reconcile import StripeEventSource


@dataclass
class Tally:
    events_at_stripe: int
    expected_runs: int
    applied: int
    lost: int
    applied_twice: int
    dead_lettered: int
    poisoned_dead: int
    pending: int
    wrong_status: int


def _expected_runs(
    events: Iterable[dict[str, Any]], poison_expected_applied: bool
) -> set[tuple[str, str]]:
    """The (event, chaos handler) runs that must have been applied."""
    expected: set[tuple[str, str]] = set()
    for event in events:
        for handler in registry.handlers_for(event["type"]):
            if handler.startswith("chaos.") and (
                poison_expected_applied or handler != "chaos.poisoned"
            ):
                expected.add((event["id"], handler))
    return expected


def _payment_statuses(conn: Connection, intents: list[str]) -> dict[str, str]:
    return {
        row[0]: row[1]
        for row in conn.execute(
            text(
                "SELECT payment_intent_id, status FROM payments WHERE payment_intent_id = ANY(:i)"
            ),
            {"i": intents},
        )
    }


def _aftercare_wrong(conn: Connection, load: LoadGenerator) -> int:
    """Disputes and refunds not (yet) in their last state: won or lost, funds withdrawn (and
    reinstated when won); refunds succeeded."""
    disputes = {
        row[0]: (row[1], row[2], row[3])
        for row in conn.execute(
            text(
                "SELECT id, status, funds_withdrawn, funds_reinstated FROM disputes "
                "WHERE id = ANY(:i)"
            ),
            {"i": list(load.disputes)},
        )
    }
    refunds = {
        row[0]: row[1]
        for row in conn.execute(
            text("SELECT id, status FROM refunds WHERE id = ANY(:i)"), {"i": load.refunds}
        )
    }
    wrong = sum(
        1
        for dispute_id, outcome in load.disputes.items()
        if disputes.get(dispute_id) != (outcome, True, outcome == "won")
    )
    return wrong + sum(1 for refund_id in load.refunds if refunds.get(refund_id) != "succeeded")


def tally(stack: Stack, load: LoadGenerator, poison_expected_applied: bool) -> Tally:
    settings = load_settings(stack.env)
    source = StripeEventSource(make_stripe_client(settings))
    events = list(source.events_since(0))
    expected = _expected_runs(events, poison_expected_applied)
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        effects = {
            tuple(row) for row in conn.execute(text("SELECT event_id, handler FROM chaos_effects"))
        }
        twice = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT 1 FROM chaos_execution_log "
                "GROUP BY event_id, handler HAVING count(*) > 1) doubled"
            )
        ).scalar_one()
        dead_by_handler: dict[str, int] = {
            row[0]: int(row[1])
            for row in conn.execute(
                text("SELECT handler, count(*) FROM handler_runs WHERE status = 'dead' GROUP BY 1")
            )
        }
        poisoned_dead = dead_by_handler.pop("chaos.poisoned", 0)
        dead = sum(dead_by_handler.values())
        pending = conn.execute(
            text("SELECT count(*) FROM handler_runs WHERE status = 'pending'")
        ).scalar_one()
        intents = load.payment_ids + load.synthetic_intents
        statuses = _payment_statuses(conn, intents)
        aftercare = _aftercare_wrong(conn, load)
    engine.dispose()
    wrong = sum(1 for intent in intents if statuses.get(intent) != "succeeded") + aftercare
    return Tally(
        events_at_stripe=len(events),
        expected_runs=len(expected),
        applied=len(expected & effects),
        lost=len(expected - effects),
        applied_twice=int(twice),
        dead_lettered=int(dead),
        poisoned_dead=int(poisoned_dead),
        pending=int(pending),
        wrong_status=wrong,
    )


def wait_for_quiet(
    stack: Stack, load: LoadGenerator, timeout: float, *, poison_applied: bool
) -> Tally:
    deadline = time.monotonic() + timeout
    while True:
        current = tally(stack, load, poison_applied)
        quiet = current.lost == 0 and current.pending == 0 and current.wrong_status == 0
        if quiet or time.monotonic() > deadline:
            return current
        log(
            f"waiting: {current.lost} runs not applied, {current.pending} pending, "
            f"{current.wrong_status} payments, disputes or refunds not yet in their last state"
        )
        time.sleep(5)


@dataclass
class Outcome:
    """What a run measured: the tallies before and after the replay, and the run's own counts."""

    before: Tally
    after: Tally
    ledger: Ledger
    converged: float
    worker_crashes: int
    broker: str
    effects: EffectsTally


def _refusals(ledger: Ledger) -> str:
    """How many, and by status: 503 is the broker refusing, 0 no answer in time."""
    if not ledger.refusals:
        return str(ledger.deliveries_refused)
    by_status = ", ".join(
        f"{status or 'no answer'}: {n}" for status, n in sorted(ledger.refusals.items())
    )
    return f"{ledger.deliveries_refused} ({by_status})"


def report(outcome: Outcome, poison_sent: int) -> int:
    """Print the table and PASS or FAIL; the exit status (1 unless nothing lost or doubled)."""
    before, after, ledger = outcome.before, outcome.after, outcome.ledger
    rows = [
        ("broker", outcome.broker),
        ("events at Stripe (stand-in)", before.events_at_stripe),
        ("deliveries answered 2xx", ledger.deliveries_2xx),
        ("deliveries refused (retried)", _refusals(ledger)),
        ("accepted (distinct event ids)", len(ledger.accepted)),
        ("thin twins sent of snapshot events", ledger.thin_twins),
        ("handler runs expected", after.expected_runs),
        ("applied", after.applied),
        ("lost", after.lost),
        ("applied twice", after.applied_twice),
        ("dead-lettered (not poisoned)", after.dead_lettered),
        ("poisoned runs dead-lettered", before.poisoned_dead),
        ("poisoned runs still dead after replay", after.poisoned_dead),
        ("payments, disputes, refunds not in their last state", after.wrong_status),
        ("seconds to converge", round(outcome.converged, 1)),
        ("worker exits restarted by the supervisor", outcome.worker_crashes),
        ("side effects committed", outcome.effects.committed),
        ("side effects delivered (distinct keys)", outcome.effects.delivered),
        ("side effects lost", outcome.effects.lost),
        ("side effects of rolled-back runs delivered", outcome.effects.rolled_back_delivered),
        ("side effects the outbox never held, delivered", outcome.effects.unknown),
        ("side effects delivered again, same key", outcome.effects.delivered_again),
        ("side effects dead", outcome.effects.dead),
    ]
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name.ljust(width)}  {value}" for name, value in rows))
    ok = (
        after.lost == 0
        and after.applied_twice == 0
        and after.dead_lettered == 0
        and after.poisoned_dead == 0
        and before.poisoned_dead == poison_sent
        and after.wrong_status == 0
        and len(ledger.accepted) >= 1
        and effects_ok(outcome.effects)
        # A RabbitMQ cluster loses one node of three at a time here: a quorum is always up, so
        # the receiver must never have refused a delivery.
        and (outcome.broker != "rabbitmq" or ledger.deliveries_refused == 0)
    )
    print("chaos: PASS" if ok else "chaos: FAIL")
    return 0 if ok else 1
