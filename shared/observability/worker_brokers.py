"""Which broker each live worker consumes from, so a process on another broker is caught.

Every process takes its broker from its own environment (BROKER_URL, else REDIS_URL). Should a
worker be started with another one than the web process, every webhook would be answered 200
and none processed, in silence. So each worker notes its broker in the database every
``NOTE_EVERY_SECONDS``; `payments worker-check` names every live worker on another broker, and
`/readyz` fails when workers are alive but none of them on ours (the queue would only grow).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from shared.db import transaction
from shared.models import WorkerBroker

log = logging.getLogger(__name__)

NOTE_EVERY_SECONDS = 30.0
# A worker unheard of for this long is taken for gone (killed without saying so).
LIVE_WITHIN = dt.timedelta(seconds=3 * NOTE_EVERY_SECONDS)


def broker_label(url: str) -> str:
    """The broker as scheme://host:port/path: enough to compare and show, no credentials.
    A RabbitMQ cluster's URL lists its nodes separated by ``;``: each is labelled."""
    return ";".join(_node_label(node) for node in url.split(";"))


def _node_label(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path or ''}"


def note_worker(sessions: sessionmaker[Session], hostname: str, broker_url: str) -> None:
    values = {"hostname": hostname, "broker": broker_label(broker_url), "seen_at": func.now()}
    with transaction(sessions) as session:
        session.execute(
            insert(WorkerBroker)
            .values(**values)
            .on_conflict_do_update(index_elements=[WorkerBroker.hostname], set_=values)
        )


def forget_worker(sessions: sessionmaker[Session], hostname: str) -> None:
    with transaction(sessions) as session:
        session.execute(delete(WorkerBroker).where(WorkerBroker.hostname == hostname))


@dataclass(frozen=True)
class BrokerAgreement:
    ours: str
    # Live workers by hostname: the broker each consumes from.
    live: dict[str, str]

    @property
    def elsewhere(self) -> dict[str, str]:
        return {host: broker for host, broker in self.live.items() if broker != self.ours}

    @property
    def stalled(self) -> bool:
        """Workers are alive, and not one consumes what this process publishes."""
        return bool(self.live) and len(self.elsewhere) == len(self.live)


def broker_agreement(sessions: sessionmaker[Session], broker_url: str) -> BrokerAgreement:
    with sessions() as session:
        rows = session.execute(
            select(WorkerBroker.hostname, WorkerBroker.broker).where(
                WorkerBroker.seen_at > func.now() - LIVE_WITHIN
            )
        ).all()
    return BrokerAgreement(broker_label(broker_url), {host: broker for host, broker in rows})


class WorkerNotes:
    """The worker's own notes, from a daemon thread of its main process."""

    def __init__(self, sessions: sessionmaker[Session], hostname: str, broker_url: str) -> None:
        self._sessions = sessions
        self._hostname = hostname
        self._broker_url = broker_url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-broker-notes", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            forget_worker(self._sessions, self._hostname)
        except Exception:  # shutting down: the note simply ages out
            log.warning("could not remove this worker's broker note", exc_info=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                note_worker(self._sessions, self._hostname, self._broker_url)
            except Exception:  # the database may be down for a while
                log.warning("could not note this worker's broker", exc_info=True)
            self._stop.wait(NOTE_EVERY_SECONDS)
