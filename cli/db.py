"""`payments db`: the database schema."""

from __future__ import annotations

import click

from cli.common import settings_or_exit
from shared.db import upgrade
from shared.observability.logs import configure_logging


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create the database if it is absent and migrate it to the latest schema."""

    settings = settings_or_exit()
    configure_logging(settings.log_level)
    upgrade(settings.database_url)
    click.echo("database is at the latest schema")
