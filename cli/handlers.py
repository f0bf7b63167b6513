"""`payments handlers`: the handlers this deployment runs, and where each comes from."""

from __future__ import annotations

import click

from cli.common import format_table, operator_runtime
from shared.ledger.handlers.registry import HandlerPolicy


def _where(policy: HandlerPolicy) -> str:
    if policy.queue:
        return policy.queue
    return "handlers (in its event's batch)" if policy.in_batch else "handlers (a task of its own)"


@click.command("handlers")
def handlers_command() -> None:
    """List the handlers every process of this deployment runs: the service's own, those of
    installed packages (the payments.handlers entry points) and HANDLER_MODULES, each with
    where it runs, its attempts and its time limit."""
    rt, _ = operator_runtime()
    settings = rt.settings
    rows = [
        [
            info.name,
            ", ".join(info.event_types),
            _where(info.policy),
            str(info.policy.max_attempts or settings.handler_max_attempts),
            f"{info.policy.time_limit_seconds or settings.handler_time_limit_seconds} s",
            info.source,
        ]
        for info in rt.registry.describe()
    ]
    headers = ["handler", "event types", "queue", "attempts", "time limit", "source"]
    click.echo(format_table(headers, rows, max_width=90))
