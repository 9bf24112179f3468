"""The shared cache adapter on Redis: degrades to a miss when Redis is down, never to an exception."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from keel.core.breaker import CircuitBreaker, ThrottledErrorLog
from keel.core.cache.port import Loader, SingleFlightCache, check_prefix, invalidation_points
from keel.core.redis_batch import RedisBatch, RedisCommand
from keel.core.redis_topology import REDIS_FAILURES, RedisClient, RedisTopology, hash_tagged

log = logging.getLogger("keel.cache")

UNAVAILABLE = REDIS_FAILURES
MAX_PENDING_INVALIDATIONS = 10_000
T = TypeVar("T")

# KEYS: the value, its lock, its generation keys. Returns the raw value ('' when absent), the current
# stamp and, when ARGV[1] holds a token, whether this call took the lock. One script rather than a
# pipelined GET + MGET: one command to encode and parse is the cheaper through redis-py
# (bench/results/changes.md).
_READ = """
local stamp = {}
for i = 3, #KEYS do stamp[i - 2] = redis.call('GET', KEYS[i]) or '0' end
local locked = 0
if ARGV[1] ~= '' and redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then locked = 1 end
return {redis.call('GET', KEYS[1]) or '', table.concat(stamp, ','), locked}
"""
# Stamp the value with the generations current *now*, in the same step as the write.
_SET_NOW = """
local stamp = {}
for i = 2, #KEYS do stamp[i - 1] = redis.call('GET', KEYS[i]) or '0' end
redis.call('SET', KEYS[1], table.concat(stamp, ',') .. '\\n' .. ARGV[1], 'PX', ARGV[2])
"""
# KEYS: the sequence, then ARGV[2] generation keys, then value keys to drop. A generation takes a
# fresh value from the sequence, never `old + 1`: one that expired and came back must not repeat
# a number some live entry was stamped with.
_INVALIDATE = """
local n = tonumber(ARGV[2])
for i = 2, n + 1 do redis.call('SET', KEYS[i], redis.call('INCR', KEYS[1]), 'PX', ARGV[1]) end
for i = n + 2, #KEYS do redis.call('DEL', KEYS[i]) end
"""
# KEYS: the lock, then optionally the value to store before letting go of the lock.
_UNLOCK = """
if #KEYS > 1 then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
"""


def redis_client(url: str, *, timeout_s: float = 0.25, max_connections: int = 128) -> RedisClient:
    """A client for a cache or limiter: Redis is an optimisation there, so waiting on it must stay cheap.
    One server, Sentinels or a Cluster, as the URL says (keel.core.redis_topology).

    Short connect/socket timeouts bound what one call can cost; one immediate retry on a connection
    error replaces a pooled connection that died with a Redis restart; no retry on timeouts (that
    would double the worst case). Health checks ping connections idle for longer than 15 s.

    The pool grows to the process's peak concurrency and keeps its connections. A blocking pool of
    16 was tried: under 100 busy callers its waiters starved past any sane wait (redis-py wakes them
    unfairly) and calls failed over to the database. Beyond `max_connections` a call degrades.
    """
    return RedisTopology.parse(url).client(
        max_connections=max_connections,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        socket_keepalive=True,
        health_check_interval=15,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )


class RedisCache(SingleFlightCache[bytes]):
    """Values live at `<namespace>v:<key>`, stamped `<generations>\\n<value>`.

    Invalidation keeps a generation per separator-bounded prefix and per deleted key
    (`<namespace>g:<point>`); a read fetches the value and the generations of all its points in one
    script call and serves the value only if its stamp still matches. `delete_prefix` is one
    O(1) script whatever the number of keys under the prefix (a SCAN walks the whole keyspace).
    Generations live `max_ttl_s` after their last bump and entry TTLs are capped at it, so a
    generation is only forgotten once nothing stamped with an older one can be alive.

    With `lock_ttl_s`, a miss also takes a short Redis lock so that replicas do not all load the same
    key at once: the others poll for the value until the lock expires, then load themselves. The
    lock rides in the same round trip as the flight's re-read, so it costs no extra one.

    When Redis fails, calls degrade (miss, skipped write), errors are counted and logged at most
    every 10 s, and after 3 failures in a row a circuit breaker answers without calling Redis,
    letting one probe through every 3 s.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        name: str,
        namespace: str | None = None,
        max_ttl_s: float = 3600.0,
        lock_ttl_s: float | None = 5.0,
        lock_poll_s: float = 0.02,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(name)
        self._client = client
        # One hash tag for the whole cache: its scripts read and bump keys across prefixes, which a
        # Redis Cluster allows only within one slot.
        self._ns = hash_tagged(namespace if namespace is not None else f"keel:cache:{name}:")
        self.max_ttl_s = max_ttl_s
        self._lock_ttl_s = lock_ttl_s
        self._lock_ms = int((lock_ttl_s or 0) * 1000)
        self._lock_poll_s = lock_poll_s
        self._breaker = breaker or CircuitBreaker(f"redis cache {name!r}", log=log)
        self._error_log = ThrottledErrorLog(log, f"redis cache {name!r}")
        self._read_script = client.register_script(_READ)
        self._set_now = client.register_script(_SET_NOW)
        # Invalidations (a create's, with its key recorded) go with other requests' in one pipeline.
        self._batch = RedisBatch(client, f"cache-{name}")
        self._unlock_script = client.register_script(_UNLOCK)
        # Invalidations that failed while Redis was unreachable, replayed before the next call once
        # it answers: a partition that loses no data must not leave stale entries live after it.
        self._pending: set[str] = set()

    async def ping(self) -> None:
        """For readiness: raises when Redis does not answer (the breaker is not consulted)."""
        await self._client.ping()

    @property
    def circuit_open(self) -> bool:
        return self._breaker.is_open

    # -- reads and writes -------------------------------------------------------------------------

    async def _read(self, key: str, *, count: bool) -> tuple[bytes | None, bytes | None]:
        value, stamp, _ = await self._fetch(key, count=count, lock_token=None)
        return value, stamp

    async def _fetch(
        self, key: str, *, count: bool, lock_token: str | None
    ) -> tuple[bytes | None, bytes | None, bool]:
        """(live value, stamp, whether `lock_token` now holds the key's lock), in one round trip."""
        keys = [
            self._value_key(key),
            self._lock_key(key),
            *(self._gen_key(p) for p in invalidation_points(key)),
        ]
        args: list[str | int] = [lock_token or "", self._lock_ms]
        ok, replies = await self._guarded("get", lambda: self._read_script(keys=keys, args=args))
        if not ok or not isinstance(replies, list):
            return None, None, False
        raw, stamp, locked = replies
        value = None
        if raw:
            header, _, payload = raw.partition(b"\n")
            value = payload if header == stamp else None
        if count:
            (self._hits if value is not None else self._misses).inc()
        return value, stamp, bool(locked)

    async def _write(self, key: str, value: bytes, ttl_s: float, stamp: bytes | None) -> None:
        ttl_ms = max(1, int(min(ttl_s, self.max_ttl_s) * 1000))
        if stamp is None:
            keys = [self._value_key(key), *(self._gen_key(p) for p in invalidation_points(key))]
            await self._guarded("set", lambda: self._set_now(keys=keys, args=[value, ttl_ms]))
        else:
            payload = stamp + b"\n" + value
            await self._guarded("set", lambda: self._client.set(self._value_key(key), payload, px=ttl_ms))

    async def delete(self, *keys: str) -> None:
        # A key is its own invalidation point (one ending in the separator is also a prefix).
        self._detach_flights(keys=keys)
        if keys:
            await self._invalidate_points(list(keys), keys)

    async def delete_prefix(self, prefix: str, *, also: Sequence[RedisCommand] = ()) -> None:
        """`also`: commands on the caller's own keys of this client, sent after the invalidation in
        the same round trip (skipped with it when Redis is unavailable)."""
        check_prefix(prefix)
        self._detach_flights(prefix=prefix)
        await self._invalidate_points([prefix], (), also)

    @property
    def client(self) -> RedisClient:
        return self._client

    async def _invalidate_points(
        self, points: list[str], keys: tuple[str, ...], also: Sequence[RedisCommand] = ()
    ) -> None:
        ok, _ = await self._guarded("invalidate", lambda: self._run_invalidate(points, keys, also))
        if not ok:
            self._remember(points)

    async def _run_invalidate(
        self, points: list[str], keys: tuple[str, ...], also: Sequence[RedisCommand] = ()
    ) -> None:
        gen_keys = [self._gen_key(p) for p in points]
        all_keys = [self._ns + "seq", *gen_keys, *(self._value_key(k) for k in keys)]
        args = [int(self.max_ttl_s * 1000), len(gen_keys)]
        # EVAL, not a registered script: in a pipeline redis-py sends SCRIPT EXISTS first for those,
        # a round trip of its own.
        await self._batch.execute(("EVAL", _INVALIDATE, len(all_keys), *all_keys, *args), *also)

    # -- cross-process stampede lock --------------------------------------------------------------

    async def _fill(self, key: str, loader: Loader, ttl_s: float, degraded: bool) -> bytes:
        if degraded or self._lock_ttl_s is None:
            return await super()._fill(key, loader, ttl_s, degraded)
        token = secrets.token_hex(8)
        deadline = time.monotonic() + self._lock_ttl_s
        while True:
            value, stamp, locked = await self._fetch(key, count=False, lock_token=token)
            if value is not None:
                if locked:
                    await self._unlock(key, token)
                return value
            if stamp is None:
                return await loader()  # Redis went away: load without lock or write
            if locked or time.monotonic() >= deadline:
                break
            await asyncio.sleep(self._lock_poll_s)  # another replica is loading this key
        try:
            value = await loader()
        except BaseException:
            if locked:
                await self._unlock(key, token)
            raise
        if locked:
            await self._unlock(key, token, store=(stamp + b"\n" + value, ttl_s))
        else:
            await self._write(key, value, ttl_s, stamp)
        return value

    async def _unlock(self, key: str, token: str, store: tuple[bytes, float] | None = None) -> None:
        keys: list[str] = [self._lock_key(key)]
        args: list[str | bytes | int] = [token]
        if store is not None:
            payload, ttl_s = store
            keys.append(self._value_key(key))
            args += [payload, max(1, int(min(ttl_s, self.max_ttl_s) * 1000))]
        # If this fails the lock simply expires after lock_ttl_s.
        await self._guarded("unlock", lambda: self._unlock_script(keys=keys, args=args))

    # -- degradation ------------------------------------------------------------------------------

    async def _guarded(self, action: str, op: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """Run `op` unless the breaker is open; (False, None) when Redis is unavailable."""
        try:
            if not self._breaker.allow():
                self._errors.inc()  # refused without a call: the opening was logged once
                return False, None
            await self._replay_pending()
            result = await op()
        except UNAVAILABLE as exc:
            self._errors.inc()
            self._breaker.record_failure()
            self._error_log.error(exc, action)
            return False, None
        self._breaker.record_success()
        return True, result

    async def _replay_pending(self) -> None:
        if not self._pending:
            return
        points, self._pending = list(self._pending), set()
        try:
            await self._run_invalidate(points, ())
        except UNAVAILABLE:
            self._pending.update(points)
            raise
        log.warning("redis cache %r: replayed %d invalidations missed while down", self.name, len(points))

    def _remember(self, points: list[str]) -> None:
        room = MAX_PENDING_INVALIDATIONS - len(self._pending)
        self._pending.update(points[:room])
        if len(points) > room:
            log.error(
                "redis cache %r: %d invalidations lost while down; entries may be stale until their TTL",
                self.name,
                len(points) - room,
            )

    def _value_key(self, key: str) -> str:
        return f"{self._ns}v:{key}"

    def _gen_key(self, point: str) -> str:
        return f"{self._ns}g:{point}"

    def _lock_key(self, key: str) -> str:
        return f"{self._ns}l:{key}"
