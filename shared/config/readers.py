"""Reading one setting from the environment: each reader checks its variable and says which
one is wrong in a one-line ConfigError."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from shared.config.settings import (
    DEFAULT_RECONCILE_LOOKBACK_SECONDS,
    DEFAULT_STRIPE_API_VERSION,
    OPERATOR_SCOPES,
    STRIPE_EVENTS_RETENTION_SECONDS,
    ConfigError,
    Operator,
)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}")
    return value


def _secret_key(env: Mapping[str, str]) -> str:
    value = _required(env, "STRIPE_SECRET_KEY")
    if value.startswith("pk_"):
        raise ConfigError(
            "STRIPE_SECRET_KEY holds a publishable key (pk_...); it needs a secret (sk_...) "
            "or restricted (rk_...) key"
        )
    if not value.startswith(("sk_", "rk_")):
        raise ConfigError("STRIPE_SECRET_KEY must start with sk_ or rk_")
    return value


def _publishable_key(env: Mapping[str, str]) -> str:
    value = _required(env, "STRIPE_PUBLISHABLE_KEY")
    if not value.startswith("pk_"):
        raise ConfigError("STRIPE_PUBLISHABLE_KEY must start with pk_")
    return value


_ENDPOINT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def _webhook_endpoints(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """STRIPE_WEBHOOK_SECRET: one whsec_ secret, or several separated by commas (a secret being
    rolled, or one per endpoint while an endpoint migrates to a new API version), each may be
    named ``name=whsec_...``; an unnamed one is named by its position (0 first)."""
    raw = _required(env, "STRIPE_WEBHOOK_SECRET")
    endpoints = []
    for index, part in enumerate(p.strip() for p in raw.split(",") if p.strip()):
        name, _, secret = part.partition("=")
        if part.startswith("whsec_"):
            name, secret = str(index), part
        if not secret.startswith("whsec_") or not _ENDPOINT_NAME.match(name):
            raise ConfigError(
                "STRIPE_WEBHOOK_SECRET must be whsec_ secrets separated by commas, each may be "
                "named name=whsec_... (lowercase letters, digits, _ . -)"
            )
        endpoints.append((name, secret))
    if not endpoints:
        raise ConfigError("STRIPE_WEBHOOK_SECRET must hold at least one whsec_ secret")
    return tuple(endpoints)


def _webhook_secrets(env: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(secret for _, secret in _webhook_endpoints(env))


def _webhook_endpoint_names(env: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(name for name, _ in _webhook_endpoints(env))


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], *, required: bool) -> str:
    value = _required(env, name) if required else _optional(env, name)
    if value is None:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(
            f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}"
        )
    return value


def _database_url(env: Mapping[str, str]) -> str:
    value = _url(
        env, "DATABASE_URL", ("postgres", "postgresql", "postgresql+psycopg2"), required=True
    )
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; we ship psycopg2. Heroku-style
    # postgres:// is common in the wild and SQLAlchemy does not know it at all.
    scheme, rest = value.split("://", 1)
    if scheme in ("postgres", "postgresql"):
        value = "postgresql+psycopg2://" + rest
    return value


def _lookback(env: Mapping[str, str]) -> int:
    value = _positive_int(env, "RECONCILE_LOOKBACK_SECONDS", DEFAULT_RECONCILE_LOOKBACK_SECONDS)
    if value > STRIPE_EVENTS_RETENTION_SECONDS:
        raise ConfigError("RECONCILE_LOOKBACK_SECONDS must be at most 30 days (2592000)")
    return value


def _non_negative_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ConfigError(f"{name} must be a whole number, got {raw!r}")
    return int(raw)


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = (_optional(env, name) or "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ConfigError(f"{name} must be true or false")
    return value in ("true", "1")


def _log_level(env: Mapping[str, str]) -> str:
    value = (env.get("LOG_LEVEL", "") or "INFO").strip().upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR")
    return value


def _log_format(env: Mapping[str, str]) -> str:
    value = (env.get("LOG_FORMAT", "") or "json").strip().lower()
    if value not in ("json", "text"):
        raise ConfigError("LOG_FORMAT must be json or text")
    return value


def _rate_limit_storage(env: Mapping[str, str]) -> str | None:
    # memory:// keeps counts per process: for a single-process dev server only.
    if env.get("RATE_LIMIT_STORAGE_URL", "").strip() == "memory://":
        return "memory://"
    return _url(env, "RATE_LIMIT_STORAGE_URL", ("redis", "rediss"), required=False) or None


def _rate_limit(env: Mapping[str, str]) -> str:
    from limits import parse_many

    value = (env.get("RATE_LIMIT", "") or "60 per minute").strip()
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(
            f"RATE_LIMIT must be like '60 per minute' or '10/second;500/hour', got {value!r}"
        ) from None
    return value


def _encryption_keys(env: Mapping[str, str]) -> tuple[str, ...]:
    from shared.infra.crypto import is_valid_key

    raw = _required(env, "PAYMENTS_ENCRYPTION_KEYS")
    keys = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not keys or not all(is_valid_key(key) for key in keys):
        raise ConfigError(
            "PAYMENTS_ENCRYPTION_KEYS must be one or more Fernet keys (urlsafe base64 of 32 "
            "bytes), comma-separated, newest first; make one with `payments keys generate`"
        )
    return keys


def _operators(env: Mapping[str, str]) -> tuple[Operator, ...]:
    """ADMIN_TOKENS (name:scope+scope:token, ...), and ADMIN_TOKEN as the operator "admin"
    with every scope: one token that does everything, as before names and scopes existed."""
    operators = [_operator(part.strip()) for part in env.get("ADMIN_TOKENS", "").split(",")]
    legacy = _token(env, "ADMIN_TOKEN")
    if legacy is not None:
        operators.append(Operator("admin", OPERATOR_SCOPES, legacy))
    found = tuple(operator for operator in operators if operator is not None)
    # A name may come back with another token (one being rotated); a token may not.
    if len({operator.token for operator in found}) != len(found):
        raise ConfigError("ADMIN_TOKENS (with ADMIN_TOKEN) gives each token once")
    return found


def _operator(part: str) -> Operator | None:
    if not part:
        return None
    name, _, rest = part.partition(":")
    scopes_text, _, token = rest.partition(":")
    scopes = frozenset(scopes_text.split("+"))
    if (
        not name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        or not scopes <= OPERATOR_SCOPES
        or len(token) < 24
    ):
        raise ConfigError(
            "ADMIN_TOKENS must be name:scope+scope:token entries separated by commas: each name "
            "letters, digits, -, _ or ., scopes among " + "+".join(sorted(OPERATOR_SCOPES)) + ", "
            "each token at least 24 characters"
        )
    return Operator(name, scopes, token)


def _token(env: Mapping[str, str], name: str) -> str | None:
    value = _optional(env, name)
    if value is not None and len(value) < 24:
        raise ConfigError(f"{name} must be at least 24 characters")
    return value


def _api_clients(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    clients: list[tuple[str, str]] = []
    for part in env.get("API_CLIENT_KEYS", "").split(","):
        if not part.strip():
            continue
        name, _, token = part.strip().partition(":")
        if not name or len(token) < 24 or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(
                "API_CLIENT_KEYS must be name:token pairs separated by commas, each name "
                "letters, digits, - or _ and each token at least 24 characters"
            )
        clients.append((name, token))
    # A name may come back with another token (a key being rotated: both are that client);
    # a token may not, or which client it proves would be a guess.
    if len({token for _, token in clients}) != len(clients):
        raise ConfigError("API_CLIENT_KEYS gives each token once")
    return tuple(clients)


def _connected_accounts(env: Mapping[str, str]) -> tuple[str, ...]:
    accounts = tuple(
        part.strip() for part in env.get("STRIPE_CONNECTED_ACCOUNTS", "").split(",") if part.strip()
    )
    if not all(account.startswith("acct_") for account in accounts):
        raise ConfigError("STRIPE_CONNECTED_ACCOUNTS must be acct_ ids separated by commas")
    return accounts


def _limit(env: Mapping[str, str], name: str, default: str) -> str:
    from limits import parse_many

    value = (env.get(name, "") or default).strip()
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(
            f"{name} must be like '60 per minute' or '10/second;500/hour', got {value!r}"
        ) from None
    return value


def _handler_queues(env: Mapping[str, str]) -> tuple[str, ...]:
    names = tuple(part.strip() for part in env.get("HANDLER_QUEUES", "").split(",") if part.strip())
    taken = {"events", "handlers", "effects"} & set(names)
    if taken:
        raise ConfigError(f"HANDLER_QUEUES may not name the service's own queues: {sorted(taken)}")
    return names


_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")


def _api_version(env: Mapping[str, str]) -> str:
    """STRIPE_API_VERSION, as Stripe names versions (2026-10-28.endive); the locked SDK's own
    when unset."""
    version = env.get("STRIPE_API_VERSION", "").strip() or DEFAULT_STRIPE_API_VERSION
    if not _API_VERSION.match(version):
        raise ConfigError(
            f"STRIPE_API_VERSION must be a Stripe API version such as {DEFAULT_STRIPE_API_VERSION}"
        )
    return version
