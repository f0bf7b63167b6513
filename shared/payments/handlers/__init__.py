"""The payments domain's own handlers, registered on the ledger's registry when this package is
imported (the runtime does, for every process): PaymentIntents (``intents``) and what comes after
them, refunds and disputes (``refunds_disputes``). The ledger itself knows no event type."""

from shared.payments.handlers import intents, refunds_disputes

__all__ = ["intents", "refunds_disputes"]
