"""`payments handlers`: the handlers this deployment runs, and where each comes from."""

from __future__ import annotations

import click

from cli.common import format_table, operator_runtime


@click.command("handlers")
def handlers_command() -> None:
    """List the handlers every process of this deployment runs: the service's own, those of
    installed packages (the payments.handlers entry points) and HANDLER_MODULES."""
    rt, _ = operator_runtime()
    rows = [
        [info.name, ", ".join(info.event_types), info.source] for info in rt.registry.describe()
    ]
    click.echo(format_table(["handler", "event types", "source"], rows, max_width=90))
