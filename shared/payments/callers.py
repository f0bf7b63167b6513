"""Who is calling the API: the scope an idempotency key and a payment's secret belong to.

Stripe scopes idempotency keys to an account; we scope ours to a caller, so the same key sent by
two callers names two payments, and no caller can replay (and read the client secret of) a
payment it did not create. A caller is either

- an API client, by the bearer token configured for it in ``API_CLIENT_KEYS``: a merchant's
  back end; or
- a checkout session: a browser that loaded the checkout page (or asked
  ``POST /api/checkout-sessions``) holds a token we signed. Its scope is a hash of the token,
  so only the browser holding the token is that caller.

Session tokens are signed with a key derived from ``PAYMENTS_ENCRYPTION_KEYS`` (no secret of
their own to configure); every configured key verifies, the first one signs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SESSION_COOKIE = "checkout_session"
SESSION_HEADER = "X-Checkout-Session"
# A session lives as long as a customer might keep a checkout tab open and come back to it.
SESSION_MAX_AGE_SECONDS = 7 * 24 * 3600

_NONCE_BYTES = 24
_SIGNATURE_BYTES = 16


class CallerRejected(Exception):
    """A credential was offered and is not valid: answer 401, never fall back to another."""


@dataclass(frozen=True)
class Caller:
    # Stored with each payment: "client:<name>" or "session:<hash of the token>".
    scope: str

    def stripe_idempotency_key(self, key: str) -> str:
        """The key sent to Stripe: namespaced by caller, so two callers' equal keys stay two
        PaymentIntents there too, and short enough for Stripe's 255-character limit."""
        digest = hashlib.sha256(f"{self.scope}\x00{key}".encode()).hexdigest()
        return f"payments-{digest}"


def _signing_keys(encryption_keys: tuple[str, ...]) -> list[bytes]:
    # Derived, not reused: a session signature must never double as anything Fernet accepts.
    return [
        hmac.new(key.encode(), b"checkout-session-signing-v1", hashlib.sha256).digest()
        for key in encryption_keys
    ]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_session_token(encryption_keys: tuple[str, ...]) -> str:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    signature = hmac.new(_signing_keys(encryption_keys)[0], nonce, hashlib.sha256).digest()
    return f"{_b64(nonce)}.{_b64(signature[:_SIGNATURE_BYTES])}"


def session_caller(token: str, encryption_keys: tuple[str, ...]) -> Caller:
    nonce_text, _, signature_text = token.partition(".")
    try:
        nonce, signature = _unb64(nonce_text), _unb64(signature_text)
    except (ValueError, TypeError):
        raise CallerRejected("checkout session is malformed") from None
    if len(nonce) != _NONCE_BYTES or len(signature) != _SIGNATURE_BYTES:
        raise CallerRejected("checkout session is malformed")
    for key in _signing_keys(encryption_keys):
        expected = hmac.new(key, nonce, hashlib.sha256).digest()[:_SIGNATURE_BYTES]
        if hmac.compare_digest(expected, signature):
            return Caller("session:" + hashlib.sha256(nonce).hexdigest()[:64])
    raise CallerRejected("checkout session is not one we issued")


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
) -> Caller | None:
    """The caller a request proves it is, None when it offers nothing, or CallerRejected."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CallerRejected("Authorization must be 'Bearer <API client key>'")
        return api_client_caller(token.strip(), api_clients)
    if session_token:
        return session_caller(session_token.strip(), encryption_keys)
    return None


def secret_digest(client_secret: str) -> str:
    return hashlib.sha256(client_secret.encode()).hexdigest()


def secret_matches(offered: str | None, stored_digest: str | None) -> bool:
    if not offered or not stored_digest:
        return False
    return hmac.compare_digest(secret_digest(offered), stored_digest)
