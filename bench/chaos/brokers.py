"""The broker the chaos suite runs on, and how it breaks it: its own Redis, SIGKILLed with no
persistence (everything queued is lost, the reconciler recovers it), or its own three-node
RabbitMQ cluster, one node SIGKILLed at a time (quorum queues keep everything queued, and the
receiver keeps answering while two nodes of three are up)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from devtools.processes import Process, free_port, port_open, redis_server_args, wait_until
from devtools.rabbitmq import OwnRabbitCluster

# How long a killed broker (or broker node) stays down before it is started again.
DOWN_SECONDS = 3


class OwnRedis:
    """A Redis with no persistence on a spare port: SIGKILL loses everything it held."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = Process("chaos-redis", redis_server_args(self.port), dict(os.environ))
        wait_until(lambda: port_open(self.port), 10, "redis start")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.proc.pid, signal.SIGKILL)
        self.proc.proc.wait(10)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


class RedisBroker:
    """The suite's Redis is the broker (REDIS_URL, no BROKER_URL)."""

    name = "redis"

    def __init__(self, redis: OwnRedis) -> None:
        self.redis = redis

    def env(self) -> dict[str, str]:
        return {}

    def start(self) -> None:
        """The stack starts its Redis itself: it is the rate limiter's store too."""

    def stop(self) -> None:
        """The stack stops its Redis."""

    def break_once(self) -> str:
        self.redis.kill()
        time.sleep(DOWN_SECONDS)
        self.redis.start()
        return f"SIGKILL redis (no AOF), restarted after {DOWN_SECONDS}s"


class RabbitBroker:
    """A three-node RabbitMQ cluster of the suite's own; each fault kills the next node."""

    name = "rabbitmq"

    def __init__(self, workdir: Path) -> None:
        self.cluster = OwnRabbitCluster(workdir / "rabbitmq", size=3)
        self.victim = 0

    def env(self) -> dict[str, str]:
        return {"BROKER_URL": self.cluster.broker_url}

    def start(self) -> None:
        self.cluster.start()

    def stop(self) -> None:
        self.cluster.stop()

    def break_once(self) -> str:
        victim, self.victim = self.victim, (self.victim + 1) % len(self.cluster.nodes)
        self.cluster.kill(victim)
        time.sleep(DOWN_SECONDS)
        started = time.monotonic()
        self.cluster.restart(victim)
        return (
            f"SIGKILL rabbitmq node {victim + 1} of {len(self.cluster.nodes)}, restarted after "
            f"{DOWN_SECONDS}s, back in the cluster {time.monotonic() - started:.1f}s later"
        )
