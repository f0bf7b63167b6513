"""A guard for kombu's Redis transport, so a worker outlives a Redis restart by itself.

When the broker goes away under a busy worker, Celery's consumer closes its connection and
kombu, closing the channels, gives back the messages the worker held unacknowledged. It asks
the connection where Redis is to do so; that connection may already have let go of its
address (``transport.client`` is None), and the ``AttributeError`` that follows is not one of
the connection errors the consumer retries on: "Unrecoverable error", and the worker exits
(seen in about one chaos run in five, kombu 5.7). Reported for what it is, a broker out of
reach, the close is ignored, the consumer reconnects, and the messages stay in Redis's unacked
set, whence kombu's ``restore_visible`` returns them to their queue (and, should Redis have
lost them, the sweeper and the reconciler recover their work).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

_GUARDED = "_payments_closed_connection_guard"


def guard_closed_connections() -> None:
    """Install the guard (once per process; idempotent)."""
    original: Callable[..., dict[str, Any]] = kombu_redis.Channel._connparams
    if getattr(original, _GUARDED, False):
        return

    @functools.wraps(original)
    def connparams(self: kombu_redis.Channel, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError(
                "the connection to the broker is closed: messages held unacknowledged stay "
                "in Redis until restored"
            )
        return original(self, asynchronous)

    setattr(connparams, _GUARDED, True)
    kombu_redis.Channel._connparams = connparams  # type: ignore[method-assign]
