"""The handler registry, and loading the handler modules a deployment lists. The service's own
handlers live with their domain (``shared.payments.handlers``); the ledger knows no event type."""

import importlib
from importlib.metadata import entry_points

from shared.ledger.handlers.registry import EventView, HandlerRegistry, UnknownHandler, registry

# Installed packages name their handler modules here (pyproject.toml:
# [project.entry-points."payments.handlers"] shop = "shop.handlers"), as pytest and Celery
# find their plugins.
ENTRY_POINT_GROUP = "payments.handlers"


def load_handler_modules(modules: tuple[str, ...]) -> None:
    """Import the handler modules of every installed package that declares some (the
    ``payments.handlers`` entry points) and those ``HANDLER_MODULES`` lists (modules that are
    not packaged), so their decorators register them.

    Every process that ingests events or runs handlers must load the same modules, or an event
    would fan out to a handler a worker does not know: every process calls this, through the
    runtime.
    """
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        entry_point.load()
    for module in modules:
        importlib.import_module(module)


__all__ = [
    "ENTRY_POINT_GROUP",
    "EventView",
    "HandlerRegistry",
    "UnknownHandler",
    "load_handler_modules",
    "registry",
]
