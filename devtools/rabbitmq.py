"""RabbitMQ nodes and clusters of our own, on spare ports, for the tests and the chaos benchmark.

They run Debian's RabbitMQ through its real scripts, not /usr/sbin/rabbitmq-server: run as root,
that wrapper switches to the rabbitmq user with ``su``, which drops our environment and so
starts or talks to the machine's node. Everything a node reads or writes is under the work
directory it is given, and its nodes find each other through an epmd of their own: the machine's
RabbitMQ (127.0.0.1:5672, its epmd on 4369) is never asked anything.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import signal
import subprocess
from pathlib import Path

import amqp

from devtools.processes import Process, free_port, port_open, wait_until

# Symlinks to the real scripts of the installed version (rabbitmq_server-3.10.8/sbin here), which
# find their own installation from where the link points.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 90.0
# For the nodes and rabbitmqctl alike: Erlang distribution on loopback only (the machine's node
# does the same), and never an epmd started by erl itself: that one daemonizes and would outlive
# every process group we stop.
ERL_ARGS = "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
_node_numbers = itertools.count(1)


class ErlangDistribution:
    """What the nodes of one cluster and the rabbitmqctl calls for them share: an epmd and a
    cookie. Erlang reads the cookie from $HOME/.erlang.cookie and refuses it unless only its
    owner can read it; a node and a rabbitmqctl with different cookies cannot talk."""

    def __init__(self, workdir: Path) -> None:
        self.home = workdir / "erlang-home"
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            # Created 0600, never readable by others, even for a moment.
            fd = os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_hex(20))
        self.epmd_port = free_port()
        self._epmd: Process | None = None

    def start(self) -> None:
        if self._epmd is not None and self._epmd.alive():
            return
        # In the foreground (no -daemon), so it stays our child, in a group we can stop.
        args = ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"]
        self._epmd = epmd = Process(f"epmd-{os.getpid()}-{self.epmd_port}", args, self.env())
        wait_until(lambda: port_open(self.epmd_port) or not epmd.alive(), 20, "epmd start")
        if not epmd.alive():
            raise RuntimeError(f"epmd on {self.epmd_port} exited:\n{epmd.output()}")

    def stop(self) -> None:
        if self._epmd is not None:
            self._epmd.stop()
            self._epmd = None

    def env(self) -> dict[str, str]:
        """Not ours to inherit: a RABBITMQ_* or ERL_* variable of the caller's would change
        which node a script starts or talks to."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            # rabbitmqctl (Elixir) warns and mangles names under a non-UTF-8 locale.
            "LC_ALL": "C.UTF-8",
            "HOME": str(self.home),
            "ERL_EPMD_PORT": str(self.epmd_port),
        }


class OwnRabbitNode:
    """One RabbitMQ node: its own name, data, ports and plugins (none). Its AMQP URL stays the
    same across kill() and restart(), which keep its data directory."""

    def __init__(self, workdir: Path, distribution: ErlangDistribution | None = None) -> None:
        self.name = f"payments-{os.getpid()}-{next(_node_numbers)}"
        self.nodename = f"{self.name}@localhost"
        self.dir = workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # Not the default (AMQP port + 20000): 25672 is the machine's node's.
        self.dist_port = free_port()
        self._owns_distribution = distribution is None
        self.distribution = distribution or ErlangDistribution(self.dir)
        self._process: Process | None = None
        self._starts = 0
        self._write_config()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.launch()
        self.wait_started(timeout)

    def launch(self) -> None:
        """Start the node's process without waiting, so a cluster's nodes boot side by side."""
        if self.alive():
            raise RuntimeError(f"{self.nodename} is already running")
        self.distribution.start()
        self._starts += 1
        args = [str(RABBITMQ_BIN / "rabbitmq-server")]
        self._process = Process(f"rabbitmq-{self.name}-{self._starts}", args, self.env(), self.dir)

    def wait_started(self, timeout: float = START_TIMEOUT) -> None:
        process = self._running()
        wait_until(
            lambda: self._answers_amqp() or not process.alive(),
            timeout,
            f"{self.nodename} start",
            interval=0.2,
        )
        if not process.alive():
            raise RuntimeError(f"{self.nodename} exited while starting:\n{process.output()}")
        # AMQP listeners open late in the boot, but a few boot steps still follow them.
        self.ctl("await_startup", "--timeout", str(int(timeout)))

    def alive(self) -> bool:
        return self._process is not None and self._process.alive()

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no clean shutdown, nothing flushed."""
        process = self._running()
        process.kill_group()
        process.stop()  # The group is already gone: this only closes its log.
        self._process = None
        wait_until(
            lambda: not port_open(self.port) and not port_open(self.dist_port),
            30,
            f"{self.nodename} ports closing after SIGKILL",
        )

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Start again on the same data, name and ports (stopping it first if it runs)."""
        self._stop_node()
        self.start(timeout)

    def stop(self) -> None:
        try:
            self._stop_node()
        finally:
            if self._owns_distribution:
                self.distribution.stop()

    def terminate(self) -> None:
        """Ask for a clean shutdown without waiting, so a cluster's nodes stop side by side."""
        if self._process is not None and self._process.alive():
            self._process.proc.send_signal(signal.SIGTERM)

    def ctl(self, *args: str, timeout: float = 120) -> str:
        """rabbitmqctl against this node, with its cookie and epmd; its output, or raises."""
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.nodename, *args],
            env=self.env(),
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} on {self.nodename} exited {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return done.stdout

    def env(self) -> dict[str, str]:
        return {
            **self.distribution.env(),
            "RABBITMQ_NODENAME": self.nodename,
            # Not /etc/rabbitmq/rabbitmq-env.conf (NODENAME=rabbit@localhost: the machine's
            # node) nor /etc/rabbitmq/rabbitmq.conf (its listener on 5672).
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            # Nor /etc/rabbitmq/conf.d/*.conf, read on top of it by default.
            "RABBITMQ_CONFIG_FILES": str(self.dir / "conf.d" / "*.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            # To standard output, so the whole log is in test-artifacts/ with the other logs.
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": ERL_ARGS,
            "RABBITMQ_CTL_ERL_ARGS": ERL_ARGS,
            # Any free port for rabbitmqctl's own node, not 35672-35682, which every rabbitmqctl
            # on the machine (the machine's node's included) competes for.
            "RABBITMQ_CTL_DIST_PORT_MIN": "0",
            "RABBITMQ_CTL_DIST_PORT_MAX": "0",
        }

    def quorum_member_saved(self, queue: str, vhost: str = "/") -> bool:
        """Whether this node has saved to disk that it holds a member of quorum queue ``queue``.

        Ra (RabbitMQ 3.10's Raft library) records a member in names.dets, flushed to disk only
        once the table has gone 0.5 s unused. A node SIGKILLed before that restarts without the
        member: on one node the queue never gets a leader again ("leader call - leader not
        known"). Wait for this before killing a node that holds a freshly declared queue."""
        server = f"{vhost.replace('/', '%2F')}_{queue}".encode()
        tables = self.dir.glob("mnesia/*/quorum/*/names.dets")
        return any(server in table.read_bytes() for table in tables)

    def _write_config(self) -> None:
        (self.dir / "rabbitmq-env.conf").write_text("# Empty: everything is in the environment.\n")
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        (self.dir / "enabled_plugins").write_text("[].\n")

    def _running(self) -> Process:
        if self._process is None:
            raise RuntimeError(f"{self.nodename} is not running")
        return self._process

    def _stop_node(self) -> None:
        if self._process is not None:
            # SIGTERM to the start script, which has the node shut down cleanly.
            self._process.stop(timeout=60)
            self._process = None

    def _answers_amqp(self) -> bool:
        if not port_open(self.port):
            return False
        # One attempt, no retries: wait_until is the loop.
        try:
            with amqp.Connection(f"127.0.0.1:{self.port}", "guest", "guest", connect_timeout=2):
                return True
        except (OSError, amqp.exceptions.AMQPError):
            return False


class OwnRabbitCluster:
    """``size`` nodes clustered with the first, sharing one epmd and cookie: ``start()`` it,
    ``stop()`` it (even after a failed start). Node ``i`` is ``nodes[i]``."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.distribution = ErlangDistribution(workdir)
        self.nodes = [OwnRabbitNode(workdir, self.distribution) for _ in range(size)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def broker_url(self) -> str:
        """Every node, for Celery's broker_url or kombu: on a failed connection each moves on
        to the next URL."""
        return ";".join(self.urls)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_started(timeout)
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", seed.nodename)
            node.ctl("start_app")
        self.wait_all_running(timeout)

    def kill(self, i: int) -> None:
        self.nodes[i].kill()

    def restart(self, i: int, timeout: float = START_TIMEOUT) -> None:
        """Node ``i`` rejoins by itself: its data directory remembers the cluster."""
        self.nodes[i].restart(timeout)
        self.wait_all_running(timeout)

    def running_nodes(self) -> set[str]:
        """The cluster's running nodes as a running member sees them."""
        node = next((node for node in self.nodes if node.alive()), None)
        if node is None:
            raise RuntimeError("no node of the cluster is running")
        status = json.loads(node.ctl("cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    def wait_all_running(self, timeout: float = START_TIMEOUT) -> None:
        everyone = {node.nodename for node in self.nodes}
        wait_until(
            lambda: self.running_nodes() == everyone, timeout, "all nodes running", interval=0.5
        )

    def stop(self) -> None:
        for node in self.nodes:
            node.terminate()
        # Every stop is attempted even if one fails; epmd goes last.
        with contextlib.ExitStack() as stack:
            stack.callback(self.distribution.stop)
            for node in self.nodes:
                stack.callback(node.stop)
