"""`payments dlq`: listing dead handler runs and sending them back to the queue."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import click

from cli.common import DATE, format_table, operator_runtime
from shared.infra.timeutil import as_utc
from shared.ledger.recovery.dead_letters import RunFilter, count_dead, list_dead, replay_dead
from shared.ledger.runs.enqueue import enqueue_handler_run


def _filters(
    event_type: str | None, handler: str | None, since: dt.datetime | None, error: str | None
) -> RunFilter:
    return RunFilter(event_type, handler, as_utc(since), error)


def _filter_options(func: Any) -> Any:
    func = click.option("--error", help="Only runs whose error contains this text.")(func)
    func = click.option("--since", type=DATE, help="Only runs dead since this UTC date/time.")(func)
    func = click.option("--handler", help="Only runs of this handler.")(func)
    func = click.option("--type", "event_type", help="Only events of this type.")(func)
    return func


def _run_table(rows: list[Any]) -> str:
    return format_table(
        ["run", "event type", "attempts", "replays", "dead since", "error"],
        [
            [
                r.run_id,
                r.event_type,
                str(r.attempts),
                str(r.replays),
                r.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
                r.error_line,
            ]
            for r in rows
        ],
    )


@click.group()
def dlq() -> None:
    """The dead-letter list: handler runs that used up their attempts."""


@dlq.command("list")
@_filter_options
@click.option("--limit", default=200, show_default=True, help="Show at most this many runs.")
def dlq_list(
    event_type: str | None,
    handler: str | None,
    since: dt.datetime | None,
    error: str | None,
    limit: int,
) -> None:
    """List dead runs, oldest first."""

    rt, _ = operator_runtime()
    rows = list_dead(rt.sessions, _filters(event_type, handler, since, error), limit=limit)
    if not rows:
        click.echo("no dead runs match")
        return
    click.echo(_run_table(rows))
    click.echo(f"\n{len(rows)} shown, {count_dead(rt.sessions)} dead in all")


@dlq.command("replay")
@click.argument("run_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Every dead run matching the filters.")
@_filter_options
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; change nothing.")
def dlq_replay(
    run_ids: tuple[str, ...],
    replay_all: bool,
    event_type: str | None,
    handler: str | None,
    since: dt.datetime | None,
    error: str | None,
    dry_run: bool,
) -> None:
    """Send dead runs back to the queue: RUN_IDS (evt_.../handler, or evt_... for all of an
    event's dead runs), or --all with optional filters."""

    if bool(run_ids) == replay_all:
        raise click.UsageError("name run ids, or give --all (with optional filters), not both")
    rt, producer = operator_runtime()
    filters = _filters(event_type, handler, since, error)
    try:
        chosen = replay_dead(rt.sessions, run_ids=run_ids, filters=filters, dry_run=True)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not chosen:
        click.echo("no dead runs match")
        return
    click.echo(_run_table(chosen))
    if dry_run:
        click.echo(f"\ndry run: {len(chosen)} run(s) would be replayed")
        return
    with click.progressbar(length=len(chosen), label="replaying", file=sys.stderr) as bar:
        replayed = replay_dead(
            rt.sessions,
            run_ids=run_ids,
            filters=filters,
            enqueue=lambda event_id, name: enqueue_handler_run(
                producer, rt.registry, event_id, name
            ),
            progress=bar.update,
            batch_size=100,
        )
    click.echo(f"\n{len(replayed)} run(s) sent back to the queue")
