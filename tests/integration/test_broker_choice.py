"""One broker, one source of truth: every process takes its broker from BROKER_URL (REDIS_URL
when unset) and from nowhere else.

Celery's command line reads BROKER_URL and CELERY_BROKER_URL by itself. Before the settings
knew BROKER_URL, a platform that set it had the worker consuming from that broker while the web
process published to REDIS_URL: every webhook answered 200 and none processed.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from devtools import stripe_events
from devtools.processes import (
    REPO_ROOT,
    Process,
    celery_worker_args,
    wait_until,
)
from shared.config import ConfigError, Settings, load_settings, pin_broker
from shared.infra.broker import EVENTS_QUEUE, celery_settings
from shared.models import StripeEvent
from tests.conftest import REDIS_HOST, WEBHOOK_SECRET

# Redis databases of this module's own: the broker, and the Redis that is only REDIS_URL.
BROKER_DB = 8
OTHER_REDIS_DB = 7


def test_the_broker_is_broker_url_or_else_redis_url(base_env):
    plain = load_settings(base_env)
    chosen = load_settings({**base_env, "BROKER_URL": f"{REDIS_HOST}/{BROKER_DB}"})

    assert plain.broker == plain.redis_url
    assert chosen.broker == f"{REDIS_HOST}/{BROKER_DB}"
    assert celery_settings(chosen)["broker_url"] == chosen.broker


def test_a_broker_url_that_is_no_broker_is_refused(base_env):
    with pytest.raises(ConfigError, match="BROKER_URL"):
        load_settings({**base_env, "BROKER_URL": "http://127.0.0.1:6379"})


def test_a_sentinel_broker_needs_its_master_name_and_only_it_does(base_env):
    sentinel = {**base_env, "BROKER_URL": "sentinel://127.0.0.1:26379/0"}
    with pytest.raises(ConfigError, match="BROKER_SENTINEL_MASTER is not set"):
        load_settings(sentinel)
    with pytest.raises(ConfigError, match="BROKER_URL is not sentinel"):
        load_settings({**base_env, "BROKER_SENTINEL_MASTER": "payments"})

    chosen = load_settings({**sentinel, "BROKER_SENTINEL_MASTER": "payments"})
    options = celery_settings(chosen)["broker_transport_options"]
    assert options["master_name"] == "payments"


def test_rabbitmq_brokers_are_accepted_one_node_or_several(base_env):
    nodes = "amqp://guest:guest@10.0.0.1:5672//;amqp://guest:guest@10.0.0.2:5672//"
    chosen = load_settings({**base_env, "BROKER_URL": nodes})
    settings = celery_settings(chosen)
    assert settings["broker_url"] == nodes
    assert settings["broker_transport_options"] == {"confirm_publish": True}
    queue_types = {q.name: q.queue_arguments["x-queue-type"] for q in settings["task_queues"]}
    assert queue_types == {"events": "quorum", "handlers": "quorum", "effects": "quorum"}


def test_celerys_own_broker_variables_may_only_agree():
    agreeing = {"CELERY_BROKER_URL": "redis://a/0", "PATH": "/bin"}
    pin_broker("redis://a/0", agreeing)
    # Dropped: from here on only the settings name the broker.
    assert agreeing == {"PATH": "/bin"}

    for name in ("CELERY_BROKER_URL", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL"):
        with pytest.raises(ConfigError, match=name):
            pin_broker("redis://a/0", {name: "amqp://elsewhere//"})


def test_a_worker_told_of_another_broker_refuses_to_start(base_env):
    env = {
        **os.environ,
        **base_env,
        "PYTHONPATH": str(REPO_ROOT),
        "CELERY_BROKER_URL": f"{REDIS_HOST}/{BROKER_DB}",
    }
    worker = Process("worker-other-broker", celery_worker_args("other@%h", concurrency=1), env)
    try:
        wait_until(lambda: not worker.alive(), 60, "the worker to refuse", interval=0.2)
        assert "CELERY_BROKER_URL names another broker" in worker.output()
    finally:
        worker.stop()


@pytest.fixture
def broker_settings(settings: Settings) -> Settings:
    for db in (BROKER_DB, OTHER_REDIS_DB):
        redis.Redis.from_url(f"{REDIS_HOST}/{db}").flushdb()
    return replace(
        settings, redis_url=f"{REDIS_HOST}/{OTHER_REDIS_DB}", broker_url=f"{REDIS_HOST}/{BROKER_DB}"
    )


def test_web_and_worker_meet_on_broker_url(
    base_env, broker_settings: Settings, sessions: sessionmaker[Session]
):
    """The web process publishes to BROKER_URL, and a worker started by Celery's own command
    line (which reads BROKER_URL too) consumes it there, REDIS_URL being another Redis."""
    event = stripe_events.event(
        "payment_intent.succeeded", stripe_events.payment_intent(status="succeeded")
    )
    body, headers = stripe_events.signed(event, WEBHOOK_SECRET)
    answer = create_app(broker_settings).test_client().post("/webhook", data=body, headers=headers)
    assert answer.status_code == 200
    broker = redis.Redis.from_url(broker_settings.broker)
    assert broker.llen(EVENTS_QUEUE) == 1
    assert redis.Redis.from_url(broker_settings.redis_url).llen(EVENTS_QUEUE) == 0

    env = {
        **os.environ,
        **base_env,
        "PYTHONPATH": str(REPO_ROOT),
        "REDIS_URL": broker_settings.redis_url,
        "BROKER_URL": broker_settings.broker,
    }
    worker = Process("worker-broker-url", celery_worker_args("broker@%h", concurrency=1), env)
    try:

        def recorded() -> bool:
            with sessions() as session:
                return session.get(StripeEvent, event["id"]) is not None

        wait_until(lambda: recorded() or not worker.alive(), 60, "the event recorded")
        assert worker.alive(), worker.output()
        assert recorded()
    finally:
        worker.stop()
