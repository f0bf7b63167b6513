"""What every command group shares: settings or a clear error, the runtime, plain tables."""

from __future__ import annotations

import click
from celery import Celery

from shared.config import ConfigError, Settings, load_settings
from shared.infra.broker import make_producer
from shared.ledger.handlers import load_handler_modules, registry
from shared.observability.logs import configure_logging
from shared.runtime import Runtime, build_runtime

DATE = click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"])


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


def needed_event_types(settings: Settings) -> list[str]:
    """The event types our handlers need, HANDLER_MODULES included: the subscription follows the
    registry, so a new handler's type cannot be left out of it."""
    load_handler_modules(settings.handler_modules)
    return registry.event_types()


def operator_runtime() -> tuple[Runtime, Celery]:
    """The runtime every entry point builds (shared.runtime) and a producer, for the
    commands that touch the ledger or the queues."""
    settings = settings_or_exit()
    configure_logging("WARNING")
    return build_runtime(settings), make_producer(settings)


def format_table(headers: list[str], rows: list[list[str]], max_width: int = 60) -> str:
    """A plain-text table: columns padded to their widest cell, cells cut at ``max_width``."""
    cells = [[h.upper() for h in headers]] + [
        [c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )
