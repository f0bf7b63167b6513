"""`payments reconcile`, `worker-check` and `doctor`: the commands that look at the running
system as a whole."""

from __future__ import annotations

import datetime as dt

import click

from shared import doctor
from shared.cli.common import (
    DATE,
    as_utc,
    format_table,
    needed_event_types,
    operator_runtime,
)
from shared.config import load_settings
from shared.infra.broker import enqueue_run
from shared.ledger.reconcile import StripeEventSource, reconcile
from shared.observability.health import check_workers
from shared.observability.logs import configure_logging


@click.command("reconcile")
@click.option("--since", type=DATE, help="List Stripe events from this UTC date/time.")
def reconcile_command(since: dt.datetime | None) -> None:
    """Ingest every Stripe event since the checkpoint (or --since) that we never recorded."""

    rt, producer = operator_runtime()
    result = reconcile(
        rt.sessions,
        StripeEventSource(rt.stripe_client),
        overlap_seconds=rt.settings.reconcile_overlap_seconds,
        lookback_seconds=rt.settings.reconcile_lookback_seconds,
        cipher=rt.cipher,
        scope=rt.scope,
        since=as_utc(since),
    )
    if result.skipped:
        raise click.ClickException("another reconciler is running; try again shortly")
    for event_id, name in result.pending_runs:
        enqueue_run(producer, event_id, name)
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


@click.command("worker-check")
@click.option(
    "--timeout", default=15.0, show_default=True, help="Seconds to wait for the canaries."
)
def worker_check(timeout: float) -> None:
    """Exit non-zero unless a worker answers a ping and consumes a canary from every queue."""

    rt, producer = operator_runtime()
    result = check_workers(producer, rt.sessions, timeout)
    click.echo(
        format_table(
            ["check", "result"],
            [["ping", ", ".join(result.pinged) or "no worker answered"]]
            + [
                [f"canary on {queue}", "consumed" if ok else "NOT consumed"]
                for queue, ok in result.queues_consumed.items()
            ],
        )
    )
    if not result.healthy:
        raise SystemExit(1)


@click.command("doctor")
@click.option(
    "--web",
    help="Our web process, e.g. http://127.0.0.1:8000: check it verifies STRIPE_WEBHOOK_SECRET.",
)
@click.option(
    "--worker-timeout", default=10.0, show_default=True, help="Seconds to wait for the canaries."
)
def doctor_command(web: str | None, worker_timeout: float) -> None:
    """Check the configuration and what it points at (Stripe keys and webhooks, PostgreSQL,
    migrations, Redis, workers); say in plain words what is wrong. Exits 1 on any problem."""

    configure_logging("ERROR")
    settings, loaded = doctor.configuration(load_settings)
    findings = [loaded]
    if settings is not None:
        findings += doctor.diagnose(settings, needed_event_types(settings), web, worker_timeout)
    click.echo(doctor.render(findings))
    if any(f.status == doctor.PROBLEM for f in findings):
        raise SystemExit(1)
