"""The names of the service's Celery tasks: the contract between what queues a task (the web
process, the workers, beat, the CLI) and the worker that runs it. Stored in queued messages, so
never renamed."""

INGEST_EVENT_TASK = "payments.ingest_event"
RUN_HANDLER_TASK = "payments.run_handler"
SWEEP_TASK = "payments.sweep_pending_runs"
CANARY_TASK = "payments.canary"
RECONCILE_TASK = "payments.reconcile"
PRUNE_TASK = "payments.prune_events"
RELAY_EFFECTS_TASK = "payments.relay_effects"
