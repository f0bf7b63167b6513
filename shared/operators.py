"""The operators: who a bearer token is (``ADMIN_TOKENS``, each with its scopes), and the audit
trail (``admin_actions``) of what they did under /admin/ or with the CLI, and how it ended.

An entry is written before the action starts and completed once it has ended, each in a short
transaction of its own: an action is never run without its entry, and a process that dies in
between leaves the entry "pending", which says the action may have happened (Stripe's own
dashboard then has the answer, and a retry with the same Idempotency-Key gets it too).
"""

from __future__ import annotations

import datetime as dt
import getpass
import hmac
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Operator
from shared.db import transaction
from shared.models import AdminAction

PENDING = "pending"
OK = "ok"


def operator_for(authorization: str | None, operators: tuple[Operator, ...]) -> Operator | None:
    """The operator whose token ``Authorization: Bearer <token>`` carries, or None."""
    offered = (authorization or "").encode()
    found = None
    # Compared with every token, so the time taken says nothing about which one matched.
    for operator in operators:
        if hmac.compare_digest(offered, f"Bearer {operator.token}".encode()):
            found = operator
    return found


def cli_operator() -> str:
    """Who runs a CLI command, as the audit trail names them: the machine's login."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name for this uid (a bare container)
        return "cli:unknown"


@dataclass(frozen=True)
class AuditEntry:
    operator: str
    scope: str
    action: str
    target: str
    idempotency_key: str | None = None


class AuditTrail:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def begin(self, entry: AuditEntry) -> int:
        with transaction(self._sessions) as session:
            row = AdminAction(
                operator=entry.operator,
                scope=entry.scope,
                action=entry.action,
                target=entry.target[:255],
                idempotency_key=entry.idempotency_key,
                outcome=PENDING,
            )
            session.add(row)
            session.flush()
            return row.id

    def finish(
        self,
        entry_id: int,
        outcome: str,
        *,
        status: int | None = None,
        stripe_request_id: str | None = None,
    ) -> None:
        with transaction(self._sessions) as session:
            session.execute(
                update(AdminAction)
                .where(AdminAction.id == entry_id)
                .values(
                    outcome=outcome[:64],
                    status=status,
                    stripe_request_id=stripe_request_id,
                    finished_at=dt.datetime.now(dt.UTC),
                )
            )

    def recent(self, *, limit: int = 100, operator: str | None = None) -> list[AdminAction]:
        query = select(AdminAction).order_by(AdminAction.id.desc()).limit(limit)
        if operator is not None:
            query = query.where(AdminAction.operator == operator)
        with self._sessions() as session:
            return list(session.execute(query).scalars())
