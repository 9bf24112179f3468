"""Per-caller rate limits (the `limits` library) as a FastAPI dependency; 429 with Retry-After, fail-open."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    # Handed over decoded: `limits` would send them to the Sentinels or the Cluster as written in the
    # URL, percent-escapes and all.
    options |= topology.credentials
    if topology.kind == "sentinel":
        # Counters read from a replica lag the primary: a limit must count on the primary only.
        return RedisSentinelStorage(
            topology.limits_uri(),
            use_replicas=False,
            db=topology.db,
            sentinel_kwargs=topology.sentinel_options(options),
            **options,
        )
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


# The most permits one lease takes from the store, and the share of the limit it may take.
MAX_LEASE = 256
LEASE_SHARE = 10
# Leased permits are used within this share of the window (and at most a second), then dropped.
LEASE_WINDOW_SHARE = 10
MAX_LEASE_S = 1.0
# Callers whose lease this process remembers; the oldest is forgotten past it.
MAX_LEASES = 10_000


@dataclass(slots=True)
class _Lease:
    """Permits of one caller this process took from the store ahead of its requests."""

    permits: int = 0
    used: int = 0
    size: int = 1
    expires: float = 0.0
    refused_until: float = 0.0
    retry_after: int = 1
    fetching: asyncio.Future[None] | None = None


class RateLimiter:
    """`limit` per caller (`"100/second"`, `"5 per minute"`), e.g. `dependencies=[Depends(lim.dependency)]`.

    The moving window (default) keeps one timestamp per request in the window: exact, and Retry-After
    is exactly when the oldest one leaves it. The sliding window counter keeps two counters per caller
    (cheaper for large limits) and approximates. Routes using it should list 429 in `responses=`.

    Leases keep the store off most requests: a caller who keeps coming takes permits in batches (one
    round trip for up to `MAX_LEASE` requests, at most a tenth of the limit, doubling while they are
    used up in time and shrinking to what was used when not), used within a tenth of the window.
    A batch is taken whole or not at all, and when it does not fit a single permit is asked for, so
    one process refuses exactly at the limit. Permits a process leased and did not use are lost to the
    others until they leave the window: with several processes a busy caller may be refused a little
    before the limit, and a lease used late may let one process exceed it by at most its batch.
    Under 20 per window (twice `LEASE_SHARE`) there are no batches: the store sees every request. A
    refusal is remembered for the rest of the lease period, so a refused caller costs no round trip.

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
        self._leases: dict[str, _Lease] = {}
        self._max_lease = min(MAX_LEASE, max(1, self.item.amount // LEASE_SHARE))
        self._lease_s = min(MAX_LEASE_S, self.item.get_expiry() / LEASE_WINDOW_SHARE)

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

    def take_leased(self, caller: str) -> bool:
        """Counts one request of `caller` against a permit this process holds, without awaiting;
        False when there is none in hand (then `check` decides)."""
        lease = self._leases.get(caller)
        return lease is not None and self._take(lease, time.monotonic())

    def _take(self, lease: _Lease, now: float) -> bool:
        if not lease.permits or now >= lease.expires:
            return False
        lease.permits -= 1
        lease.used += 1
        self._allowed.inc()
        return True

    async def check(self, caller: str) -> None:
        """Counts one request of `caller`; 429 with Retry-After when it is over the limit."""
        lease = self._leases.get(caller)
        if lease is None:
            lease = self._leases[caller] = _Lease()
            if len(self._leases) > MAX_LEASES:
                del self._leases[next(iter(self._leases))]
        while True:
            now = time.monotonic()
            if self._take(lease, now):
                return
            if now < lease.refused_until:
                self._limited.inc()
                raise self._too_many(lease.retry_after)
            if lease.fetching is None:
                break
            await asyncio.shield(lease.fetching)  # another request of this caller is leasing: share it
        if not self._breaker.allow():
            self._failed_open.inc()
            return
        fetching = lease.fetching = asyncio.get_running_loop().create_future()
        try:
            granted = await self._lease(caller, lease, now)
        except UNAVAILABLE as exc:
            self._breaker.record_failure()
            self._error_log.error(exc, "check")
            self._failed_open.inc()
            return
        finally:
            lease.fetching = None
            fetching.set_result(None)
        self._breaker.record_success()
        if granted:
            self._allowed.inc()
            return
        self._limited.inc()
        raise self._too_many(lease.retry_after)

    async def _lease(self, caller: str, lease: _Lease, now: float) -> bool:
        """Takes a batch of permits (or the one this request needs) from the store, the first for this
        request; False, with when to retry noted on the lease, when not even one is left."""
        if lease.permits:  # expired with permits left: the caller needs fewer
            lease.size = max(1, lease.used)
        elif lease.used:  # used up in time: the caller needs more
            lease.size = min(self._max_lease, lease.size * 2)
        lease.permits = lease.used = 0
        for size in (lease.size, 1) if lease.size > 1 else (1,):
            if await self._strategy.hit(self.item, self.name, caller, cost=size):
                lease.permits, lease.used, lease.expires = size - 1, 1, now + self._lease_s
                return True
        stats = await self._strategy.get_window_stats(self.item, self.name, caller)
        lease.retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        lease.refused_until = now + min(self._lease_s, lease.retry_after)
        lease.size = 1
        return False


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
