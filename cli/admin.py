"""`payments admin`: the operators' audit trail (every /admin/ action and every money-moving
CLI command, with who did it and how it ended)."""

from __future__ import annotations

import click

from cli.common import format_table, operator_runtime
from shared.operators import AuditTrail


@click.group()
def admin() -> None:
    """The operators' audit trail."""


@admin.command("audit")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--operator", help="Only this operator's actions (a name, or cli:<login>).")
def audit(limit: int, operator: str | None) -> None:
    """The latest admin actions, newest first. "pending" never finished: the process died."""
    rt, _ = operator_runtime()
    rows = AuditTrail(rt.sessions).recent(limit=limit, operator=operator)
    table = [
        [
            f"{row.started_at:%Y-%m-%d %H:%M:%S}",
            row.operator,
            row.scope,
            row.action,
            row.target,
            row.idempotency_key or "",
            row.outcome,
            "" if row.status is None else str(row.status),
            row.stripe_request_id or "",
        ]
        for row in rows
    ]
    headers = ["when", "operator", "scope", "action", "target", "key", "outcome", "http", "stripe"]
    click.echo(format_table(headers, table))
