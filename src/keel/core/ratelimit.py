"""Per-caller rate limits (the `limits` library) as a FastAPI dependency; 429 with Retry-After, fail-open."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Literal

from fastapi import Request
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisSentinelStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.aio.strategies import RateLimiter as Strategy
from limits.errors import StorageError
from starlette.types import Scope

from keel.core.breaker import CircuitBreaker, ThrottledErrorLog
from keel.core.errors import TooManyRequests
from keel.core.identity import MAX_USER_ID_LENGTH
from keel.core.metrics import RATE_LIMIT_DECISIONS
from keel.core.redis_topology import REDIS_FAILURES, RedisTopology
from keel.core.settings import Settings

log = logging.getLogger("keel.ratelimit")

StrategyName = Literal["moving-window", "sliding-window-counter"]
# What a store that is down raises: wrapped by `limits`, or straight from the client or the socket.
UNAVAILABLE: tuple[type[BaseException], ...] = (StorageError, *REDIS_FAILURES)


def memory_storage() -> Storage:
    """Counters in this process: the default under `keel up`, where one process serves everything."""
    return MemoryStorage()


def redis_storage(url: str, *, key_prefix: str = "keel:ratelimit", timeout_s: float = 0.25) -> Storage:
    """Counters in Redis, shared by every replica; built at start-up and handed to each `RateLimiter`.

    `implementation="redispy"` selects redis-py's asyncio client (the default would need coredis).
    Short timeouts: the limiter sits on every request and fails open, so a slow Redis must cost little.
    """
    topology = RedisTopology.parse(url)
    options: dict[str, Any] = {
        "implementation": "redispy",
        "key_prefix": key_prefix,
        "wrap_exceptions": True,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": 15,
    }
    if topology.kind == "sentinel":
        # Counters read from a replica lag the primary: a limit must count on the primary only.
        return RedisSentinelStorage(topology.limits_uri(), use_replicas=False, db=topology.db, **options)
    if topology.kind == "cluster":
        return RedisClusterStorage(topology.limits_uri(), **options)
    return RedisStorage(topology.limits_uri(), **options)


def shared_storage(settings: Settings) -> Storage:
    """Redis when REDIS_URL is set (every replica counts against one limit), else this process."""
    return redis_storage(settings.redis_url) if settings.redis_url else memory_storage()


def caller_of(request: Request) -> str:
    """The `X-User-Id` when it looks like one, else the client address (the default key)."""
    user = request.headers.get("x-user-id", "").strip()
    if user and len(user) <= MAX_USER_ID_LENGTH and user.isprintable():
        return f"user:{user}"
    return address_of(request)


def address_in(scope: Scope) -> str:
    """`address_of` from a raw ASGI scope (fast paths)."""
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


def address_of(request: Request) -> str:
    """The client as the ASGI server reports it: the TCP peer, or, when the peer is in TRUSTED_PROXIES,
    the address its X-Forwarded-For names (keel.core.http_server). Never read X-Forwarded-For here.

    X-User-Id is an unauthenticated claim in the seeds: a caller can mint a fresh one per request.
    Where that matters, stack a looser limiter keyed by address in front of the per-user one."""
    return f"ip:{request.client.host if request.client else 'unknown'}"


class RateLimiter:
    """`limit` per caller (`"100/second"`, `"5 per minute"`), e.g. `dependencies=[Depends(lim.dependency)]`.

    The moving window (default) keeps one timestamp per request in the window: exact, and Retry-After
    is exactly when the oldest one leaves it. The sliding window counter keeps two counters per caller
    (cheaper for large limits) and approximates. Routes using it should list 429 in `responses=`.

    If the store fails the request is allowed: a rate limiter must not take the API down with its
    store. Failures are counted (`rate_limit_decisions_total{outcome="failed_open"}`), logged at most
    every 10 s, and after 3 in a row a breaker skips the store for 3 s at a time.
    """

    def __init__(
        self,
        limit: str,
        storage: Storage,
        *,
        name: str = "default",
        strategy: StrategyName = "moving-window",
        key: Callable[[Request], str] = caller_of,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.limit = limit
        self.name = name
        self._key = key
        self.item: RateLimitItem = parse(limit)
        self._strategy: Strategy = (
            MovingWindowRateLimiter(storage)
            if strategy == "moving-window"
            else SlidingWindowCounterRateLimiter(storage)
        )
        self._breaker = breaker or CircuitBreaker(f"rate-limit store {name!r}", log=log)
        self._error_log = ThrottledErrorLog(log, f"rate-limit store {name!r}")
        self._allowed = RATE_LIMIT_DECISIONS.labels(name, "allowed")
        self._limited = RATE_LIMIT_DECISIONS.labels(name, "limited")
        self._failed_open = RATE_LIMIT_DECISIONS.labels(name, "failed_open")

    async def dependency(self, request: Request) -> None:
        """The FastAPI dependency: raises TooManyRequests (429, Retry-After) when the caller is over."""
        await self.check(self._key(request))

    async def ensure_under(self, caller: str) -> None:
        """429 when `caller` is already over the limit, without counting this request: for limits on
        failures (count with `check` only when something failed), so a caller over it is refused
        before any work is done. Fails open like `check`."""
        if not self._breaker.allow():
            return
        try:
            if await self._strategy.test(self.item, self.name, caller):
                return
            stats = await self._strategy.get_window_stats(self.item, self.name, caller)
        except UNAVAILABLE as exc:
            self._breaker.record_failure()
            self._error_log.error(exc, "test")
            return
        self._limited.inc()
        raise self._too_many(max(1, math.ceil(stats.reset_time - time.time())))

    def _too_many(self, retry_after: int) -> TooManyRequests:
        return TooManyRequests(
            f"rate limit of {self.limit} exceeded; retry in {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )

    async def check(self, caller: str) -> None:
        if not self._breaker.allow():
            self._failed_open.inc()
            return
        try:
            if await self._strategy.hit(self.item, self.name, caller):
                retry_after = None
            else:
                stats = await self._strategy.get_window_stats(self.item, self.name, caller)
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        except UNAVAILABLE as exc:
            self._breaker.record_failure()
            self._error_log.error(exc, "check")
            self._failed_open.inc()
            return
        self._breaker.record_success()
        if retry_after is None:
            self._allowed.inc()
            return
        self._limited.inc()
        raise self._too_many(retry_after)


class ClientLimits:
    """One route family's limits per client: per address and per user (where there is one), each
    `limits` notation or empty for none. Per address in this process's memory, like the signed-link
    budget (with R replicas a client gets R budgets; no Redis round trip for it); per user in
    `storage` (Redis when configured: one budget across replicas)."""

    def __init__(self, name: str, storage: Storage, *, per_address: str = "", per_user: str = "") -> None:
        self.by_address = (
            RateLimiter(per_address, memory_storage(), name=f"{name}-address") if per_address else None
        )
        self.by_user = RateLimiter(per_user, storage, name=f"{name}-user") if per_user else None

    async def check(self, address: str, user: str | None = None) -> None:
        """Counts one request; 429 with Retry-After when the address or the user is over its limit."""
        if self.by_address is not None:
            await self.by_address.check(address)
        if self.by_user is not None and user is not None:
            await self.by_user.check(user)
