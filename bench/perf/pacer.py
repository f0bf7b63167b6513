"""An open-loop HTTP pacer: requests at a constant rate, latency from each one's scheduled time.

wrk is closed-loop: a slow answer delays the next request, so the slow moments are sampled
less (coordinated omission). Here request i is due at ``start + i / rate`` whatever happened
before; it goes out on connection ``i % connections`` (keep-alive, raw asyncio streams), and its
latency runs from when it was due, so time spent waiting behind a slow answer counts. This is
wrk2's model. The pacer's own lateness (asyncio timers have about 1 ms resolution, and it
shares the cores with the server) is part of every latency; ``own_lag`` reports it.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class Shot:
    """One request: when it was due, sent and answered (perf_counter seconds), and its status
    (0: no answer: connection error or timeout)."""

    due: float
    sent: float
    done: float
    status: int
    # Whether its connection was free when it fell due: then any lag is the pacer's own.
    idle: bool = True

    @property
    def latency(self) -> float:
        return self.done - self.due

    @property
    def lag(self) -> float:
        return self.sent - self.due


@dataclass
class PaceResult:
    shots: list[Shot]
    wall_seconds: float
    cpu_seconds: float
    # Convert a perf_counter reading to wall-clock seconds (the database's clock).
    wall_offset: float = field(default=0.0)

    def ok(self) -> list[Shot]:
        return [shot for shot in self.shots if 200 <= shot.status < 300]

    def refused(self) -> int:
        return len(self.shots) - len(self.ok())

    def own_lag(self) -> list[float]:
        """How late the pacer itself sent requests whose connection was free at their time."""
        return [shot.lag for shot in self.shots if shot.idle]

    def behind_slow_answers(self) -> int:
        """Requests that fell due while their connection still waited for an answer."""
        return sum(1 for shot in self.shots if not shot.idle)

    def client_cpu_share(self) -> float:
        """The pacer's CPU seconds per wall second (1.0 is one whole core)."""
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    if length:
        await reader.readexactly(length)
    return status, close


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def exchange(self, payload: bytes) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(payload)
        status, close = await _read_response(reader)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def _lane(
    conn: _Connection, payloads: Sequence[bytes], indices: range, start: float, interval: float
) -> list[tuple[int, Shot]]:
    shots = []
    for index in indices:
        due = start + index * interval
        delay = due - time.perf_counter()
        idle = delay > 0
        if idle:
            await asyncio.sleep(delay)
        sent = time.perf_counter()
        try:
            status = await asyncio.wait_for(conn.exchange(payloads[index]), REQUEST_TIMEOUT)
        except (OSError, ValueError, IndexError, TimeoutError, asyncio.IncompleteReadError):
            conn.close()
            status = 0
        shots.append((index, Shot(due, sent, time.perf_counter(), status, idle)))
    conn.close()
    return shots


async def _pace(
    host: str, port: int, payloads: Sequence[bytes], rate: float, connections: int
) -> list[Shot]:
    interval = 1.0 / rate
    lanes = [_Connection(host, port) for _ in range(min(connections, len(payloads)))]
    # Open every connection before the clock starts: connecting is not what is measured.
    for conn in lanes:
        conn.streams = await asyncio.open_connection(host, port)
    start = time.perf_counter() + 0.05
    results = await asyncio.gather(
        *(
            _lane(conn, payloads, range(n, len(payloads), len(lanes)), start, interval)
            for n, conn in enumerate(lanes)
        )
    )
    ordered = sorted((pair for lane in results for pair in lane), key=lambda pair: pair[0])
    return [shot for _, shot in ordered]


def pace(port: int, payloads: Sequence[bytes], rate: float, connections: int = 64) -> PaceResult:
    """Send ``payloads`` to 127.0.0.1:port at ``rate`` per second, open-loop."""
    wall_offset = time.time() - time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    shots = asyncio.run(_pace("127.0.0.1", port, payloads, rate, connections))
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return PaceResult(shots, wall, cpu, wall_offset)
