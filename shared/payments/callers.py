"""Who is calling the API: the scope an idempotency key and a payment's secret belong to.

Stripe scopes idempotency keys to an account; we scope ours to a caller, so the same key sent by
two callers names two payments, and no caller can replay (and read the client secret of) a
payment it did not create. A caller is either

- an API client, by one of the bearer tokens configured for it in ``API_CLIENT_KEYS``: a
  merchant's back end, which prices orders; or
- a checkout session (``shared.payments.checkout_sessions``): an order an API client priced,
  paid by the browser holding the session's token. Its scope is the session's id.

Session tokens are "<session id>.<issued at>.<signature>", signed with a key derived from
``PAYMENTS_ENCRYPTION_KEYS`` (no secret of their own to configure); every configured key
verifies, the first one signs. The signature refuses a forged token without a database read;
the session's row says whether it may still pay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from shared.infra.crypto import derived_keys

SESSION_HEADER = "X-Checkout-Session"
SESSION_SCOPE_PREFIX = "session:"

_SIGNATURE_BYTES = 16


class CallerRejected(Exception):
    """A credential was offered and is not valid: answer 401, never fall back to another."""


class SessionTokenExpired(CallerRejected):
    """A genuine session token older than any session lives: its session is over (410)."""


@dataclass(frozen=True)
class Caller:
    # Stored with each payment and sent to Stripe in its metadata (payments_caller):
    # "client:<name>" or "session:<checkout session id>".
    scope: str

    @property
    def checkout_session_id(self) -> str | None:
        if self.scope.startswith(SESSION_SCOPE_PREFIX):
            return self.scope.removeprefix(SESSION_SCOPE_PREFIX)
        return None

    def stripe_idempotency_key(self, key: str) -> str:
        """The key sent to Stripe: namespaced by caller, so two callers' equal keys stay two
        PaymentIntents there too, and short enough for Stripe's 255-character limit."""
        digest = hashlib.sha256(f"{self.scope}\x00{key}".encode()).hexdigest()
        return f"payments-{digest}"


def _signing_keys(encryption_keys: tuple[str, ...]) -> tuple[bytes, ...]:
    return derived_keys(encryption_keys, b"checkout-session-signing-v1")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _token_signature(key: bytes, session_id: str, issued_at: int) -> bytes:
    return hmac.new(key, f"{session_id}.{issued_at}".encode(), hashlib.sha256).digest()[
        :_SIGNATURE_BYTES
    ]


def new_session_token(session_id: str, issued_at: int, encryption_keys: tuple[str, ...]) -> str:
    """The token of checkout session ``session_id``, made at ``issued_at`` (unix seconds)."""
    signature = _token_signature(_signing_keys(encryption_keys)[0], session_id, issued_at)
    return f"{session_id}.{issued_at}.{_b64(signature)}"


def session_caller(
    token: str, encryption_keys: tuple[str, ...], *, now: int, max_age_seconds: int
) -> Caller:
    """The checkout session a token is for, if we signed it; SessionTokenExpired if it was
    issued longer ago than any session lives."""
    session_id, issued_text, signature_text = _token_parts(token)
    issued_at = int(issued_text)
    for key in _signing_keys(encryption_keys):
        expected = _token_signature(key, session_id, issued_at)
        if hmac.compare_digest(expected, signature_text):
            if now - issued_at > max_age_seconds:
                raise SessionTokenExpired("checkout session has expired")
            return Caller(SESSION_SCOPE_PREFIX + session_id)
    raise CallerRejected("checkout session is not one we issued")


def _token_parts(token: str) -> tuple[str, str, bytes]:
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isascii() or not parts[1].isdigit():
        raise CallerRejected("checkout session is malformed")
    try:
        signature = _unb64(parts[2])
    except (ValueError, TypeError):
        raise CallerRejected("checkout session is malformed") from None
    if len(signature) != _SIGNATURE_BYTES or not 0 < len(parts[0]) <= 64 or len(parts[1]) > 12:
        raise CallerRejected("checkout session is malformed")
    return parts[0], parts[1], signature


def api_client_caller(token: str, api_clients: tuple[tuple[str, str], ...]) -> Caller:
    match = None
    # Compare against every client, so the time taken says nothing about which one matched.
    for name, expected in api_clients:
        if hmac.compare_digest(token.encode(), expected.encode()):
            match = name
    if match is None:
        raise CallerRejected("API client key is not valid")
    return Caller(f"client:{match}")


def identify_caller(
    authorization: str | None,
    session_token: str | None,
    *,
    api_clients: tuple[tuple[str, str], ...],
    encryption_keys: tuple[str, ...],
    now: int,
    session_max_age_seconds: int,
) -> Caller | None:
    """The caller a request proves it is, None when it offers nothing, or CallerRejected."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CallerRejected("Authorization must be 'Bearer <API client key>'")
        return api_client_caller(token.strip(), api_clients)
    if session_token:
        return session_caller(
            session_token.strip(),
            encryption_keys,
            now=now,
            max_age_seconds=session_max_age_seconds,
        )
    return None


def secret_digest(client_secret: str) -> str:
    return hashlib.sha256(client_secret.encode()).hexdigest()


def secret_matches(offered: str | None, stored_digest: str | None) -> bool:
    if not offered or not stored_digest:
        return False
    return hmac.compare_digest(secret_digest(offered), stored_digest)
