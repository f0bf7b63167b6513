"""The chaos suite's side effects: every chaos handler asks for one HTTP effect per event
(shared.effects), which an endpoint of the suite's own receives, the worker (relay included)
SIGKILLed meanwhile as everything else.

The verdict: every committed effect delivered (lost 0); nothing delivered the outbox does not
hold; nothing of a rolled-back run delivered (``chaos.poisoned`` asks for its effect, then
fails while poisoned: its key must reach the endpoint only after the replay); a key delivered
more than once is the documented at-least-once (a relay killed between its send and its note),
counted, never a different key for one effect.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import create_engine, text

from bench.chaos.stack import Stack, log
from devtools.processes import wait_until
from devtools.receivers import Received
from shared.config import load_settings


@dataclass
class EffectsTally:
    committed: int
    delivered: int
    lost: int
    unknown: int
    rolled_back_delivered: int
    delivered_again: int
    dead: int


def wait_for_effects(stack: Stack, timeout: float) -> None:
    """Until the outbox holds nothing pending: every committed effect delivered or dead."""
    engine = create_engine(load_settings(stack.env).database_url)
    try:

        def drained() -> bool:
            with engine.connect() as conn:
                pending = conn.execute(
                    text("SELECT count(*) FROM outbox_effects WHERE status = 'pending'")
                ).scalar_one()
            return pending == 0

        wait_until(drained, timeout, "every committed effect delivered", interval=1)
    finally:
        engine.dispose()


def tally_effects(stack: Stack, received: Received, poison_removed_at: float) -> EffectsTally:
    engine = create_engine(load_settings(stack.env).database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT idempotency_key, handler, status FROM outbox_effects")
            ).all()
    finally:
        engine.dispose()
    committed = {key for key, _, status in rows if status == "done"}
    poisoned = {key for key, handler, _ in rows if handler == "chaos.poisoned"}
    posts = received.all()
    delivered = {post.headers.get("Idempotency-Key") for post in posts}
    early = [
        post
        for post, at in zip(posts, received.times(), strict=True)
        if post.headers.get("Idempotency-Key") in poisoned and at < poison_removed_at
    ]
    tally = EffectsTally(
        committed=len(committed),
        delivered=len(delivered & committed),
        lost=len(committed - delivered),
        unknown=len(delivered - {key for key, _, _ in rows}),
        rolled_back_delivered=len(early),
        delivered_again=len(posts) - len(delivered),
        dead=sum(1 for _, _, status in rows if status == "dead"),
    )
    log(f"effects: {tally}")
    return tally


def effects_ok(tally: EffectsTally) -> bool:
    return (
        tally.committed > 0
        and tally.lost == 0
        and tally.unknown == 0
        and tally.rolled_back_delivered == 0
        and tally.dead == 0
    )
