"""Celery workers: the app (`celery_app`) and thin tasks that call `shared` and translate its
decisions into Celery retries."""
