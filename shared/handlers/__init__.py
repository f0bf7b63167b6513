"""Event handlers. Importing this package registers every handler."""

from shared.handlers import payment_intents
from shared.handlers.registry import EventView, HandlerRegistry, UnknownHandler, registry

__all__ = ["EventView", "HandlerRegistry", "UnknownHandler", "payment_intents", "registry"]
