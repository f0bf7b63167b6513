"""Which failures are worth retrying.

Transient: the world was briefly unavailable (the database, the network, Stripe rate limits or
5xx). Retrying later is expected to succeed, so these get many attempts. Permanent: anything
else, typically a handler bug or a payload it cannot read. Retrying cannot fix those, so they get
a few attempts (in case the classification is wrong) and then go to the dead-letter list.
"""

from __future__ import annotations

import socket

import psycopg2
import requests
import stripe
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    OperationalError,  # connection refused, server closed the connection, admin shutdown
    PoolTimeoutError,
    psycopg2.OperationalError,
    psycopg2.errors.SerializationFailure,
    psycopg2.errors.DeadlockDetected,
    psycopg2.errors.LockNotAvailable,
    stripe.APIConnectionError,
    stripe.RateLimitError,
    requests.ConnectionError,
    requests.Timeout,
    RedisConnectionError,
    RedisTimeoutError,
    BrokerOperationalError,
    ConnectionError,
    TimeoutError,
    socket.timeout,
)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, _TRANSIENT_TYPES):
        return True
    if isinstance(error, DBAPIError):
        # The driver error is wrapped; a dropped connection or a serialization conflict is
        # transient whatever SQLAlchemy class wraps it.
        return error.connection_invalidated or isinstance(error.orig, _TRANSIENT_TYPES)
    if isinstance(error, stripe.APIError) and not isinstance(error, stripe.InvalidRequestError):
        status = error.http_status or 0
        return status >= 500 or status == 0
    # Only an explicit `raise ... from cause`: an implicit __context__ would make a handler bug
    # raised while handling a database error look transient.
    cause = error.__cause__
    return cause is not None and cause is not error and is_transient(cause)
