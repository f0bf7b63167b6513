"""``payments``: the operator CLI, one module per command group."""

from __future__ import annotations

import sys

import click

from cli.admin import admin
from cli.db import db
from cli.dev import dev
from cli.dlq import dlq
from cli.effects import effects
from cli.events import events
from cli.handlers import handlers_command
from cli.keys import keys
from cli.ops import doctor_command, worker_check
from cli.payments import cancel, capture, payments, refund
from cli.reconcile import reconcile_command
from cli.webhook import webhook


@click.group()
def main() -> None:
    """Operate the Stripe payments service."""


for command in (
    db,
    webhook,
    dlq,
    effects,
    handlers_command,
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
