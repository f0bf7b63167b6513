"""The workers' Celery app: ``celery -A workers.celery_app worker -Q events,handlers``."""

from celery import Celery

app = Celery("payments")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)
