"""When to try a failed message again: exponential backoff with full jitter, and which errors are the
infrastructure's fault (retried without spending the message's attempts) rather than the message's."""

from __future__ import annotations

import random
from dataclasses import dataclass

import redis.exceptions
import sqlalchemy.exc

from keel.core.bus.errors import BrokerUnavailable, PublishFailed
from keel.core.settings import Settings

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


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a message is tried (`max_attempts`, the first try included) and how long it waits."""

    max_attempts: int = 5
    base_s: float = 0.2
    max_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not 0 < self.base_s <= self.max_s:
            raise ValueError("backoff needs 0 < base_s <= max_s")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.consumer_max_attempts,
            base_s=settings.consumer_backoff_base_s,
            max_s=settings.consumer_backoff_max_s,
        )

    def cap(self, retry: int) -> float:
        """The longest wait before retry number `retry` (1-based): base·2^(retry-1), at most max_s."""
        # The exponent is bounded so a partition stuck for days does not overflow the float.
        return min(self.max_s, self.base_s * float(2 ** min(max(retry - 1, 0), 62)))

    def delay(self, retry: int, rng: random.Random) -> float:
        """Full jitter (uniform in [0, cap]): replicas that failed together do not retry in lockstep."""
        return rng.uniform(0.0, self.cap(retry))


def is_transient(exc: BaseException) -> bool:
    """True when the failure is the infrastructure's (a database or broker outage, a timeout, a
    deadlock): the message itself may be fine, so it is retried without using up its attempts —
    an outage must not send every message that was in flight to the dead-letter topic."""
    if isinstance(exc, _TRANSIENT_TYPES):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    sqlstate = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES)
