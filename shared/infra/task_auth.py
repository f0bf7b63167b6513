"""Authenticated task bodies: a worker runs only tasks that a holder of the keys queued.

The ingest task's body is the event encrypted with ``PAYMENTS_ENCRYPTION_KEYS`` (Fernet is
authenticated). Every other task (run a handler, sweep, reconcile, prune, a canary) carries, in
a message header, an HMAC of its name and arguments made with a key derived from the same keys:
added to every message our apps send (``SigningCelery.send_task``), checked by the worker
before the task runs. Someone who can write to the broker but holds no key cannot make a worker
re-run a handler, reconcile or prune; such a body is acknowledged, not run, logged and counted
(``tasks_refused_total``). Every configured key verifies, the first one signs, so the keys
rotate as the payload keys do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from celery import Celery, Task

from shared.infra.crypto import derived_keys
from shared.observability.metrics import TASKS_REFUSED
from shared.task_names import INGEST_EVENT_TASK

log = logging.getLogger(__name__)

HEADER = "payments_auth"
# Tasks whose body authenticates itself: ingest's is the encrypted event.
SELF_AUTHENTICATED = frozenset({INGEST_EVENT_TASK})


def task_keys(encryption_keys: tuple[str, ...]) -> tuple[bytes, ...]:
    return derived_keys(encryption_keys, b"task-body-signing-v1")


def _canonical(task: str, args: Any, kwargs: Any) -> bytes:
    body = [task, list(args or ()), dict(kwargs or {})]
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def signature(task: str, args: Any, kwargs: Any, key: bytes) -> str:
    return hmac.new(key, _canonical(task, args, kwargs), hashlib.sha256).hexdigest()


def authentic(task: str, args: Any, kwargs: Any, offered: Any, keys: tuple[bytes, ...]) -> bool:
    if not isinstance(offered, str) or not keys:
        return False
    # Every key compared, so the time taken says nothing about which one matched.
    matches = [hmac.compare_digest(offered, signature(task, args, kwargs, key)) for key in keys]
    return any(matches)


class SigningCelery(Celery):
    """A Celery app whose every task message (sent, retried, scheduled by beat: all go through
    ``send_task``) carries the signature of its name and arguments."""

    task_keys: tuple[bytes, ...] = ()

    def use_keys(self, encryption_keys: tuple[str, ...]) -> None:
        self.task_keys = task_keys(encryption_keys)

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        if self.task_keys and name not in SELF_AUTHENTICATED:
            headers = dict(options.pop("headers", None) or {})
            headers[HEADER] = signature(name, args, kwargs, self.task_keys[0])
            options["headers"] = headers
        return super().send_task(name, args, kwargs, **options)


class AuthenticatedTask(Task):
    """The workers' task class: a body from the broker runs only with a valid signature."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        from_broker = not request.called_directly and self.name not in SELF_AUTHENTICATED
        keys = getattr(self.app, "task_keys", ())
        if from_broker and not authentic(
            self.name, args, kwargs, getattr(request, HEADER, None), keys
        ):
            TASKS_REFUSED.labels(task=self.name).inc()
            log.warning("refused a %s body without a valid signature (not run)", self.name)
            return None
        return super().__call__(*args, **kwargs)
