"""Which failures are the infrastructure's (a database, broker or Redis outage, a timeout, a deadlock)
rather than the input's. Consumers retry them without spending a message's attempts; the HTTP edge
answers them 503 `dependency_unavailable` (try again) instead of 500."""

from __future__ import annotations

import asyncpg.exceptions
import redis.exceptions
import sqlalchemy.exc

from keel.core.bus.errors import BrokerUnavailable, PublishFailed

# SQLSTATE classes that say "try again later", not "this input is wrong": connection exception (08),
# transaction rollback — serialization failure, deadlock (40), insufficient resources (53),
# operator intervention — admin shutdown, cannot connect now (57P).
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "40", "53", "57P")

# Built-in connection/timeout errors, a dead broker, a dead Redis and a drained connection pool.
# Not OSError as a whole: FileNotFoundError is a bug in the handler, and would retry forever.
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    BrokerUnavailable,
    PublishFailed,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    sqlalchemy.exc.TimeoutError,
)


def sqlstate(exc: BaseException) -> str:
    """The PostgreSQL SQLSTATE of a driver error, raw or wrapped by SQLAlchemy ("" when there is none)."""
    state = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
    return state if isinstance(state, str) else ""


def is_transient(exc: BaseException) -> bool:
    """True when the failure is the infrastructure's: the request or message itself may be fine."""
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    # A pooled connection the server already dropped; asyncpg also uses InterfaceError for misuse
    # (a bug, not an outage), so only the closed-connection case counts.
    if isinstance(exc, asyncpg.exceptions.InterfaceError) and "connection is closed" in str(exc):
        return True
    # A connection reused while asyncpg still cancels its last statement (its server died mid-way):
    # the connection is dropped at check-in, and the request may be tried again.
    if isinstance(exc, asyncpg.exceptions.InternalClientError) and "another operation" in str(exc):
        return True
    return sqlstate(exc).startswith(_TRANSIENT_SQLSTATE_PREFIXES)
