"""`payments effects`: the outbox of handlers' side effects, and sending dead ones back."""

from __future__ import annotations

import click

from cli.common import format_table, operator_runtime
from shared.db import transaction
from shared.effects.relay import effects_of, replay_dead_effects
from shared.models import OutboxEffect
from shared.models.effects import EFFECT_STATUSES

STATUSES = [status.value for status in EFFECT_STATUSES]


def _last_line(error: str | None) -> str:
    """The exception line of a stored traceback (stored redacted already)."""
    lines = (error or "").strip().splitlines()
    return lines[-1] if lines else ""


def _table(rows: list[OutboxEffect]) -> str:
    return format_table(
        ["id", "event", "handler", "name", "kind", "status", "attempts", "asked", "error"],
        [
            [
                str(row.id),
                row.event_id,
                row.handler,
                row.name,
                row.kind,
                row.status,
                str(row.attempts),
                row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                _last_line(row.last_error),
            ]
            for row in rows
        ],
    )


@click.group()
def effects() -> None:
    """Side effects handlers asked for (emails, HTTP calls), delivered after their run commits."""


@effects.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only effects in this state.")
@click.option("--limit", default=100, show_default=True, help="Show at most this many.")
def effects_list(status: str | None, limit: int) -> None:
    """List effects, newest first; payloads stay encrypted."""
    rt, _ = operator_runtime()
    with rt.sessions() as session:
        rows = list(effects_of(session, status, limit))
    if not rows:
        click.echo("no effects match")
        return
    click.echo(_table(rows))


@effects.command("replay")
@click.argument("effect_ids", nargs=-1, type=int)
@click.option("--all-dead", is_flag=True, help="Every dead effect.")
def effects_replay(effect_ids: tuple[int, ...], all_dead: bool) -> None:
    """Send dead effects back to the relay: EFFECT_IDS, or --all-dead. Each is delivered again
    with its own idempotency key; one that is not dead is left alone."""
    if bool(effect_ids) == all_dead:
        raise click.UsageError("name effect ids, or give --all-dead, not both")
    rt, _ = operator_runtime()
    with transaction(rt.sessions) as session:
        replayed = replay_dead_effects(session, None if all_dead else list(effect_ids))
    click.echo(f"{len(replayed)} effect(s) sent back to the relay")
