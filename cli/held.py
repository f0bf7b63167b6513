"""`payments events held` and `payments events release`: runs held because their event's API
version is not one their handler reads (shared.ledger.recovery.held)."""

from __future__ import annotations

import click

from cli.common import format_table, operator_runtime
from shared.ledger.recovery.held import list_held, release_held
from shared.ledger.runs.enqueue import enqueue_handler_run


@click.command("held")
@click.option("--limit", default=200, show_default=True, help="Show at most this many.")
def events_held(limit: int) -> None:
    """List held runs, oldest first, with their event's API version."""
    rt, _ = operator_runtime()
    rows = list_held(rt.sessions, limit)
    if not rows:
        click.echo("no held runs")
        return
    click.echo(
        format_table(
            ["event", "type", "api version", "handler", "held since"],
            [
                [
                    row.event_id,
                    row.event_type,
                    row.api_version or "",
                    row.handler,
                    row.held_since.strftime("%Y-%m-%d %H:%M:%S"),
                ]
                for row in rows
            ],
        )
    )


@click.command("release")
@click.argument("event_id", required=False)
@click.option("--handler", help="Only this handler's held runs.")
@click.option("--all", "release_all", is_flag=True, help="Every held run (with --handler: its).")
def events_release(event_id: str | None, handler: str | None, release_all: bool) -> None:
    """Send held runs to their handlers: EVENT_ID's, or --all. Do it once the handler reads
    the event's API version; `payments events replay` fetches the event from Stripe instead."""
    if bool(event_id) == release_all:
        raise click.UsageError("name an event, or give --all, not both")
    rt, producer = operator_runtime()
    released = release_held(
        rt.sessions,
        lambda evt, name: enqueue_handler_run(producer, rt.registry, evt, name),
        event_id=event_id,
        handler=handler,
    )
    click.echo(f"{len(released)} held run(s) released")
