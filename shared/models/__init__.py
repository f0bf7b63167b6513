"""The tables, one module per area: ``payments`` (payments, refunds, disputes, checkout
sessions), ``ledger`` (events, handler runs, the reconciler's checkpoint, quarantined bodies),
``effects`` (the outbox of handlers' side effects) and ``operations`` (the admin audit,
worker canaries and brokers), on the one ``base``."""

from shared.models.base import EVENT_SOURCES, NAMING_CONVENTION, Base, RunStatus
from shared.models.effects import OutboxEffect
from shared.models.ledger import HandlerRun, QuarantinedEvent, ReconcileCheckpoint, StripeEvent
from shared.models.operations import AdminAction, WorkerBroker, WorkerCanary
from shared.models.payments import CheckoutSession, Dispute, Payment, Refund

__all__ = [
    "EVENT_SOURCES",
    "NAMING_CONVENTION",
    "AdminAction",
    "Base",
    "CheckoutSession",
    "Dispute",
    "HandlerRun",
    "OutboxEffect",
    "Payment",
    "QuarantinedEvent",
    "ReconcileCheckpoint",
    "Refund",
    "RunStatus",
    "StripeEvent",
    "WorkerBroker",
    "WorkerCanary",
]
