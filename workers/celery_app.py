"""The workers' Celery app: ``celery -A workers.celery_app worker -Q events,handlers``."""

from typing import Any

from celery import Celery
from celery.signals import worker_init

from shared.config import load_settings
from shared.handlers import load_handler_modules
from shared.logging import install_redaction
from shared.observability import init_sentry

# Before Celery sets up its own handlers: every record it prints is redacted at creation.
install_redaction()

app = Celery("payments")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)


@worker_init.connect
def _prepare_worker(**_: Any) -> None:
    settings = load_settings()
    init_sentry(settings, component="worker")
    # Fail at start, not on the first task, when a configured handler module does not import.
    load_handler_modules(settings.handler_modules)
