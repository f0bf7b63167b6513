"""The workers' Celery app: ``celery -A workers.celery_app worker -Q events,handlers``."""

from typing import Any

from celery import Celery
from celery.signals import worker_init

from shared.config import load_settings
from shared.observability import init_sentry

app = Celery("payments")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)


@worker_init.connect
def _start_sentry(**_: Any) -> None:
    init_sentry(load_settings(), component="worker")
