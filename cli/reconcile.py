"""`payments reconcile`: ingesting the Stripe events we never recorded."""

from __future__ import annotations

import datetime as dt

import click

from cli.common import DATE, format_table, operator_runtime
from shared.infra.timeutil import as_utc
from shared.ledger.recovery.reconcile import reconcile_with_stripe
from shared.ledger.runs.enqueue import enqueue_handler_run


@click.command("reconcile")
@click.option("--since", type=DATE, help="List Stripe events from this UTC date/time.")
def reconcile_command(since: dt.datetime | None) -> None:
    """Ingest every Stripe event since the checkpoint (or --since) that we never recorded."""

    rt, producer = operator_runtime()
    result = reconcile_with_stripe(rt, since=as_utc(since))
    if result.skipped:
        raise click.ClickException("another reconciler is running; try again shortly")
    for event_id, name in result.pending_runs:
        enqueue_handler_run(producer, rt.registry, event_id, name)
    click.echo(
        format_table(
            ["since", "listed", "recovered", "runs queued"],
            [
                [
                    result.since.strftime("%Y-%m-%d %H:%M:%S"),
                    str(result.listed),
                    str(result.recovered),
                    str(len(result.pending_runs)),
                ]
            ],
        )
    )
