"""``payments``: the operator CLI, one module per command group."""

from __future__ import annotations

import sys

import click

from shared.cli.admin import admin
from shared.cli.db import db
from shared.cli.dev import dev
from shared.cli.dlq import dlq
from shared.cli.events import events
from shared.cli.keys import keys
from shared.cli.ops import doctor_command, worker_check
from shared.cli.payments import cancel, capture, payments, refund
from shared.cli.reconcile import reconcile_command
from shared.cli.webhook import webhook


@click.group()
def main() -> None:
    """Operate the Stripe payments service."""


for command in (
    db,
    webhook,
    dlq,
    events,
    reconcile_command,
    worker_check,
    doctor_command,
    keys,
    refund,
    capture,
    cancel,
    payments,
    admin,
    dev,
):
    main.add_command(command)


if __name__ == "__main__":
    sys.exit(main())
