"""`payments worker-check` and `doctor`: is the running system healthy, and if not, why."""

from __future__ import annotations

import click

from cli import doctor
from cli.common import format_table, needed_event_types, operator_runtime
from shared.config import load_settings
from shared.observability.health import check_workers
from shared.observability.logs import configure_logging
from shared.observability.worker_brokers import broker_agreement, broker_label


@click.command("worker-check")
@click.option(
    "--timeout", default=15.0, show_default=True, help="Seconds to wait for the canaries."
)
def worker_check(timeout: float) -> None:
    """Exit non-zero unless a worker answers a ping and consumes a canary from every queue."""

    rt, producer = operator_runtime()
    result = check_workers(producer, rt.sessions, timeout)
    # Workers on another broker answer no ping and take no canary of ours: name them, the
    # likely reason should the canaries fail (and a misconfiguration even when they pass).
    elsewhere = broker_agreement(rt.sessions, rt.settings.broker).elsewhere
    click.echo(
        format_table(
            ["check", "result"],
            [["ping", ", ".join(result.pinged) or "no worker answered"]]
            + [
                [f"canary on {queue}", "consumed" if ok else "NOT consumed"]
                for queue, ok in result.queues_consumed.items()
            ]
            + [
                [f"worker {host}", f"ON ANOTHER BROKER: {broker} (ours: "
                 f"{broker_label(rt.settings.broker)})"]
                for host, broker in sorted(elsewhere.items())
            ],
        )
    )  # fmt: skip
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
