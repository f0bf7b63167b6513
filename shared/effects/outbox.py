"""What a handler uses to ask for a side effect: ``event.effects``.

An effect asked for is a row written in the handler's own transaction (inside its savepoint):
it commits with the run's done mark, or rolls back with a failed attempt and is asked again by
the retry. Nothing leaves the process here; the relay (shared.effects.relay) delivers each
committed effect afterwards, at least once, always with the same idempotency key.

"Once" is per (event, handler, name): a handler that runs again for the same event (a retry, a
redelivery, an operator's forced replay) and asks for the same name gets the effect it already
has, not a second one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.infra.crypto import PayloadCipher
from shared.models import OutboxEffect

# Where a session built by the runtime (shared.db.make_session_factory) carries the cipher that
# encrypts what effects are given.
CIPHER_INFO_KEY = "payload_cipher"

EFFECTS_TABLE: Table = OutboxEffect.__table__  # type: ignore[assignment]


def idempotency_key(event_id: str, handler: str, name: str) -> str:
    """Stable across every attempt and delivery of one effect, and unlike any other's."""
    digest = hashlib.sha256("\0".join((event_id, handler, name)).encode()).hexdigest()
    return f"eff_{digest[:40]}"


class EffectsUnavailable(RuntimeError):
    """The session was not built for the ledger: it has no cipher to encrypt an effect with."""


@dataclass(frozen=True)
class Effects:
    session: Session
    event_id: str
    handler: str

    def send(self, kind: str, name: str, payload: dict[str, Any]) -> str:
        """Ask for the effect ``kind`` (a built-in, ``http`` or ``email``, or one registered
        with shared.effects.kinds) under ``name``, given ``payload`` (JSON). Returns its
        idempotency key, the one every delivery of it carries."""
        cipher = self.session.info.get(CIPHER_INFO_KEY)
        if not isinstance(cipher, PayloadCipher):
            raise EffectsUnavailable("effects need a session from the runtime, which has a cipher")
        key = idempotency_key(self.event_id, self.handler, name)
        row = {
            "event_id": self.event_id,
            "handler": self.handler,
            "name": name,
            "kind": kind,
            "payload_encrypted": cipher.encrypt(json.loads(json.dumps(payload))),
            "idempotency_key": key,
        }
        self.session.execute(insert(EFFECTS_TABLE).values(row).on_conflict_do_nothing())
        return key

    def http(
        self, name: str, url: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> str:
        """POST ``body`` as JSON to ``url``, with ``Idempotency-Key``. A 2xx delivers it; a 4xx
        other than 408, 409, 425 and 429 is final (dead at once); anything else is retried."""
        return self.send("http", name, {"url": url, "json": body, "headers": headers or {}})

    def email(self, name: str, to: str, subject: str, text: str) -> str:
        """A plain-text email through the configured SMTP server, its Message-ID derived from
        the idempotency key so a receiving server can drop a repeat."""
        return self.send("email", name, {"to": to, "subject": subject, "text": text})
