"""Each task lands in exactly one queue, on a real Redis with every queue declared."""

from __future__ import annotations

import pytest

from shared.dev.processes import declare_worker_queues
from shared.infra.broker import (
    EVENTS_QUEUE,
    HANDLERS_QUEUE,
    INGEST_EVENT_TASK,
    RUN_HANDLER_TASK,
    make_producer,
)


@pytest.mark.parametrize(
    ("task", "queue"), [(INGEST_EVENT_TASK, EVENTS_QUEUE), (RUN_HANDLER_TASK, HANDLERS_QUEUE)]
)
def test_task_is_routed_to_its_queue_only(quiet_settings, quiet_redis, task, queue):
    producer = make_producer(quiet_settings)
    declare_worker_queues(producer)
    producer.send_task(task, args=["x", "y"])
    producer.close()

    lengths = {name: quiet_redis.llen(name) for name in (EVENTS_QUEUE, HANDLERS_QUEUE)}

    assert lengths == {
        EVENTS_QUEUE: int(queue == EVENTS_QUEUE),
        HANDLERS_QUEUE: int(queue == HANDLERS_QUEUE),
    }
