"""A worker outlives a Redis restart (shared.infra.redis_transport), on a real Redis and kombu.

The state kombu reaches when Celery's consumer drops its connection on a broker loss: a channel
still holding an unacknowledged message, its connection no longer knowing where Redis is. Closing
that channel must be a connection error the consumer retries on, not the AttributeError that
ended the worker ("Unrecoverable error"); and the message must survive in Redis.
"""

from __future__ import annotations

from typing import cast

import redis
from kombu import Connection

from shared.infra.redis_transport import guard_closed_connections
from tests.conftest import QUIET_REDIS_DB, REDIS_HOST

QUEUE = "reconnect-test"


def test_closing_a_channel_after_its_connection_let_go_keeps_the_worker_and_the_message(
    quiet_redis: redis.Redis,
):
    guard_closed_connections()
    connection = Connection(f"{REDIS_HOST}/{QUIET_REDIS_DB}")
    channel = connection.default_channel
    channel.queue_declare(QUEUE)
    channel.basic_publish(channel.prepare_message("held"), exchange="", routing_key=QUEUE)
    held = channel.basic_get(QUEUE, no_ack=False)
    assert held is not None and held.body == b"held"

    # Where Celery's consumer leaves it after a broker loss (kombu.Connection._close).
    connection.transport.client = None
    connection.maybe_close_channel(channel)  # raised AttributeError before the guard

    # Not lost: still in Redis's unacknowledged set, for restore_visible to requeue.
    assert quiet_redis.hlen("unacked") == 1
    again = Connection(f"{REDIS_HOST}/{QUIET_REDIS_DB}")
    try:
        # Restored once its visibility timeout has passed: make it have passed.
        tags = cast(list[bytes], quiet_redis.hkeys("unacked"))
        quiet_redis.zadd("unacked_index", {tags[0]: 0})
        again.default_channel.qos.restore_visible(num=100, interval=1)
        assert quiet_redis.llen(QUEUE) == 1
    finally:
        again.release()


def test_the_guard_is_installed_once():
    from kombu.transport import redis as kombu_redis

    guard_closed_connections()
    installed = kombu_redis.Channel._connparams
    guard_closed_connections()
    assert kombu_redis.Channel._connparams is installed
