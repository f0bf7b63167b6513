"""Other "hosts" on this one machine, for tests that cut a host off the network (root only).

A host is a Linux network namespace joined to the root namespace by a veth pair: the root side
has the address ``gateway`` and the inside ``address``, on a /30 of 10.231.0.0/16 of the host's
own. A process run on the host (``run``) sees only its loopback and that link, so it reaches
what listens on ``gateway`` in the root namespace (a database, a broker started for the test)
and nothing else: never the machine's own services on 127.0.0.1.

``cut()`` is a network partition as a host sees one: packets vanish both ways, with no RST and
no error; connections stay open and a new one times out. ``restore()`` heals it, and TCP
connections that outlived the cut carry on. How:

* the root side of the pair goes down: the inside end loses its carrier and drops what it sends
  (silently: veth drops a packet for a peer that is down);
* inside, the gateway's MAC address is a permanent neighbour entry: with none, ARP would fail
  during the cut and the kernel would fail connections to the gateway at once with "no route
  to host", which is an answer, not silence;
* in the root namespace, a blackhole route for the host's /30 (far behind the link's own
  route) takes over while the link is down: replies to the host are dropped there instead of
  following the default route out of the machine.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import subprocess
from pathlib import Path

from devtools.processes import REPO_ROOT, Process

# Private space for the hosts' links, one /30 each (16384 of them); chosen to be unlikely in use.
HOSTS_NETWORK = ipaddress.IPv4Network("10.231.0.0/16")
# Behind the link's own route (metric 0), so only used while the link is down.
BLACKHOLE_METRIC = "4000"
_numbers = itertools.count()


def ip(*args: str, namespace: str | None = None, check: bool = True) -> str:
    """`ip` with ``args`` (in ``namespace`` if given); its output, or raises on failure."""
    prefix = ["ip", "-n", namespace] if namespace else ["ip"]
    done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def _subnets_in_use() -> set[ipaddress.IPv4Network]:
    """The /30s of HOSTS_NETWORK that already have an address or a route here."""
    used = set()
    for line in (ip("-4", "-o", "addr", "show") + ip("-4", "route", "show")).splitlines():
        for word in line.split():
            with contextlib.suppress(ValueError):
                address = ipaddress.IPv4Interface(word).ip
                if address in HOSTS_NETWORK:
                    used.add(ipaddress.IPv4Network(f"{address}/30", strict=False))
    return used


def _free_subnet(number: int) -> ipaddress.IPv4Network:
    """A /30 no address or route here uses, starting from one that depends on our process id,
    so that two test runs at once are unlikely to look at the same ones first."""
    subnets = list(HOSTS_NETWORK.subnets(new_prefix=30))
    used = _subnets_in_use()
    start = (os.getpid() * 8 + number) % len(subnets)
    for candidate in itertools.chain(subnets[start:], subnets[:start]):
        if candidate not in used:
            return candidate
    raise RuntimeError(f"no free /30 left in {HOSTS_NETWORK}")


class Link:
    """One veth pair between a host and the root namespace, on a /30 of its own: ``gateway``
    outside, ``address`` inside."""

    def __init__(self, tag: str) -> None:
        # Interface names are at most 15 characters: "pm" + pid in hex (6 at most) + counters.
        self.outside = f"pm{tag}r"
        self.inside = f"pm{tag}n"
        self.subnet: ipaddress.IPv4Network | None = None
        self.gateway = self.address = ""

    def make(self, namespace: str) -> None:
        # Chosen as it is taken, so that the next link sees it in use.
        subnet = self.subnet = _free_subnet(next(_numbers))
        self.gateway = str(subnet.network_address + 1)
        self.address = str(subnet.network_address + 2)
        ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
        ip("link", "set", self.inside, "netns", namespace)
        ip("addr", "add", f"{self.gateway}/30", "dev", self.outside)
        ip("link", "set", self.outside, "up")
        ip("route", "add", "blackhole", str(self.subnet), "metric", BLACKHOLE_METRIC)
        ip("addr", "add", f"{self.address}/30", "dev", self.inside, namespace=namespace)
        ip("link", "set", self.inside, "up", namespace=namespace)
        mac = Path(f"/sys/class/net/{self.outside}/address").read_text().strip()
        ip(
            *("neigh", "replace", self.gateway, "lladdr", mac, "dev", self.inside),
            *("nud", "permanent"),
            namespace=namespace,
        )

    def remove(self) -> None:
        # Deleting either end of a veth pair deletes both.
        ip("link", "del", self.outside, check=False)
        if self.subnet is not None:
            route = ("route", "del", "blackhole", str(self.subnet), "metric", BLACKHOLE_METRIC)
            ip(*route, check=False)


class Host:
    """A network namespace with ``links`` veth pairs to the root namespace (one, unless a test
    cuts the host off one service and not another: each service then listens on its own
    link's gateway). ``Host.create()`` makes one; ``remove()`` undoes everything (idempotent;
    the processes run on it first stopped)."""

    def __init__(self, label: str, links: int = 1) -> None:
        tag = f"{os.getpid():x}{next(_numbers)}"
        self.label = label
        self.namespace = f"payments-{label}-{tag}"
        self.links = [Link(f"{tag}{n}" if links > 1 else tag) for n in range(links)]
        self.processes: list[Process] = []
        self._created = False

    # The first link's ends, for a host of one link.
    @property
    def gateway(self) -> str:
        return self.links[0].gateway

    @property
    def address(self) -> str:
        return self.links[0].address

    @property
    def outside(self) -> str:
        return self.links[0].outside

    @classmethod
    def create(cls, label: str, links: int = 1) -> Host:
        host = cls(label, links)
        try:
            host._make()
        except BaseException:
            host.remove()
            raise
        return host

    def _make(self) -> None:
        ip("netns", "add", self.namespace)
        self._created = True
        ip("link", "set", "lo", "up", namespace=self.namespace)
        for link in self.links:
            link.make(self.namespace)

    def cut(self, link: int | None = None) -> None:
        """Partition the host from everything outside it (or from what is reached through
        one of its links), silently, both ways."""
        for one in self._links(link):
            ip("link", "set", one.outside, "down")

    def restore(self, link: int | None = None) -> None:
        """Heal the partition: the same addresses, so open connections carry on."""
        for one in self._links(link):
            ip("link", "set", one.outside, "up")

    def is_cut(self, link: int = 0) -> bool:
        return "state DOWN" in ip("-o", "link", "show", self.links[link].outside)

    def _links(self, link: int | None) -> list[Link]:
        return self.links if link is None else [self.links[link]]

    def run(
        self, name: str, args: list[str], env: dict[str, str], cwd: Path = REPO_ROOT
    ) -> Process:
        """``args`` started on the host (``ip netns exec`` execs it: the Process is the
        command itself, in a process group of its own). Stopped by ``remove()`` if still
        running."""
        process = Process(name, ["ip", "netns", "exec", self.namespace, *args], env, cwd)
        self.processes.append(process)
        return process

    def remove(self) -> None:
        """Stop what runs on the host, then delete the namespace, the pair and the route.
        Every step is tried even when an earlier one fails or was never done."""
        for process in self.processes:
            # Stopping a stopped Process again does no harm.
            with contextlib.suppress(Exception):
                process.stop()
        for link in self.links:
            link.remove()
        if self._created:
            ip("netns", "del", self.namespace, check=False)
            self._created = False

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *_: object) -> None:
        self.remove()
