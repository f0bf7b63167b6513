"""The handler registry, and loading the handler modules a deployment lists. The service's own
handlers live with their domain (``shared.payments.handlers``); the ledger knows no event type."""

import importlib

from shared.ledger.handlers.registry import EventView, HandlerRegistry, UnknownHandler, registry


def load_handler_modules(modules: tuple[str, ...]) -> None:
    """Import extra handler modules (``HANDLER_MODULES``) so their decorators register them.

    Every process that ingests events or runs handlers must load the same modules, or an event
    would fan out to a handler a worker does not know.
    """
    for module in modules:
        importlib.import_module(module)


__all__ = [
    "EventView",
    "HandlerRegistry",
    "UnknownHandler",
    "load_handler_modules",
    "registry",
]
