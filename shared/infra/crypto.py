"""Encryption at rest for stored event payloads (customers' names, emails, addresses).

Fernet (AES-128-CBC with HMAC-SHA256, from the cryptography package) under MultiFernet: the first
key in ``PAYMENTS_ENCRYPTION_KEYS`` encrypts, every key decrypts, so a new key can be put in front
while old rows are re-encrypted with ``payments keys rotate``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class PayloadCipher:
    def __init__(self, keys: tuple[str, ...]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        self._primary = Fernet(keys[0].encode())

    def encrypt(self, payload: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(payload, separators=(",", ":")).encode()).decode()

    def decrypt(self, token: str) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self._fernet.decrypt(token.encode()))
        return payload

    def rotate(self, token: str) -> str:
        """Re-encrypt under the first key (whatever key encrypted it)."""
        return self._fernet.rotate(token.encode()).decode()

    def is_current(self, token: str) -> bool:
        try:
            self._primary.decrypt(token.encode())
        except InvalidToken:
            return False
        return True


def derived_keys(encryption_keys: tuple[str, ...], purpose: bytes) -> tuple[bytes, ...]:
    """One HMAC key per configured key, for ``purpose`` (newest first, as the keys are).
    Derived, not reused: a signature made with one must never double as anything Fernet, or
    another purpose, accepts."""
    return tuple(
        hmac.new(key.encode(), purpose, hashlib.sha256).digest() for key in encryption_keys
    )


def is_valid_key(key: str) -> bool:
    try:
        Fernet(key.encode())
    except (ValueError, TypeError):
        return False
    return True


def generate_key() -> str:
    return Fernet.generate_key().decode()


def rotate_stored_payloads(
    sessions: Any, cipher: PayloadCipher, *, batch_size: int = 500, progress: Any = None
) -> tuple[int, int]:
    """Re-encrypt every stored payload under the newest key, and encrypt plaintext rows.

    Walks the table by primary key in batches, each its own transaction, so it can run while
    the service does and be stopped and started again. Returns (re-encrypted, encrypted).
    """
    from sqlalchemy import select

    from shared.db import transaction
    from shared.models import StripeEvent

    rotated = encrypted = 0
    last_id = ""
    while True:
        with transaction(sessions) as session:
            rows = list(
                session.execute(
                    select(StripeEvent)
                    .where(StripeEvent.id > last_id)
                    .order_by(StripeEvent.id)
                    .limit(batch_size)
                    .with_for_update(skip_locked=False)
                ).scalars()
            )
            if not rows:
                return rotated, encrypted
            for row in rows:
                if row.payload_encrypted is None:
                    assert row.payload is not None
                    row.payload_encrypted = cipher.encrypt(row.payload)
                    row.payload = None
                    encrypted += 1
                elif not cipher.is_current(row.payload_encrypted):
                    row.payload_encrypted = cipher.rotate(row.payload_encrypted)
                    rotated += 1
            last_id = rows[-1].id
        if progress:
            progress(len(rows))
