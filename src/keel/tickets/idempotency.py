"""Idempotency-Key, fast path: `idem:<user_id>:<key>` in Redis for an hour (seed 002, A3).

Redis answers the common cases without touching PostgreSQL: a key in flight (409), a finished key
(replay the stored response), a key reused with another body (422). It is only the fast path: the
ticket's own transaction writes the durable record (`ticket_idempotency`), so when Redis has evicted
the key or is down, PostgreSQL still maps the key to exactly one ticket.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import orjson

from keel.core.cache import Cache, RedisCache
from keel.core.redis_batch import RedisBatch, RedisCommand
from keel.core.redis_topology import REDIS_FAILURES, RedisClient

log = logging.getLogger("keel.tickets.idempotency")

TTL_S = 3600
# A reservation outlives any request (REQUEST_TIMEOUT_S, 5 s by default) but not by much: a create
# that died in flight (process killed before its commit) frees its key for the client's retry within
# this, instead of answering 409 for the key's hour. Two creates that overlap past it still make one
# ticket: PostgreSQL's idempotency row decides.
PENDING_TTL_S = 30


class State(Enum):
    NEW = "new"  # we reserved the key: go ahead and create
    IN_FLIGHT = "in_flight"  # another request with this key has not finished
    DONE = "done"  # finished: `response` holds what it answered
    UNKNOWN = "unknown"  # the fast path is unavailable: let PostgreSQL decide


@dataclass(frozen=True, slots=True)
class Reservation:
    state: State
    request_hash: str | None = None
    status_code: int = 201
    response: bytes | None = None


def redis_key(user: str, key: str) -> str:
    return f"idem:{user}:{key}"


class IdempotencyStore(Protocol):
    async def reserve(self, user: str, key: str, request_hash: str) -> Reservation: ...

    async def complete(
        self, user: str, key: str, request_hash: str, status_code: int, response: bytes
    ) -> None: ...

    async def release(self, user: str, key: str) -> None: ...


def _pending(request_hash: str) -> bytes:
    return orjson.dumps({"state": "pending", "hash": request_hash})


def _done(request_hash: str, status_code: int, response: bytes) -> bytes:
    return orjson.dumps(
        {"state": "done", "hash": request_hash, "status": status_code, "response": response.decode()}
    )


def _parse(raw: bytes) -> Reservation:
    data = orjson.loads(raw)
    if data.get("state") == "done":
        return Reservation(State.DONE, data["hash"], int(data["status"]), data["response"].encode())
    return Reservation(State.IN_FLIGHT, data.get("hash"))


class RedisIdempotencyStore:
    def __init__(self, client: RedisClient, ttl_s: int = TTL_S, pending_ttl_s: int = PENDING_TTL_S) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._pending_ttl_s = pending_ttl_s
        # Reservations go with other requests' in one pipeline.
        self._reservations = RedisBatch(client, "idempotency")

    async def reserve(self, user: str, key: str, request_hash: str) -> Reservation:
        name = redis_key(user, key)
        try:
            # SET NX then GET on a miss: one round trip in the common (new key) case. (SET's NX and
            # GET together need Redis 7; the bundled server of a bare `make test` may be older.)
            reserve = ("SET", name, _pending(request_hash), "NX", "EX", self._pending_ttl_s)
            if (await self._reservations.execute(reserve))[0]:
                return Reservation(State.NEW, request_hash)
            raw = await self._redis.get(name)
        except REDIS_FAILURES as exc:
            log.warning("idempotency fast path unavailable: %s", exc)
            return Reservation(State.UNKNOWN)
        if raw is None:  # expired between the two calls: let PostgreSQL decide
            return Reservation(State.UNKNOWN)
        return _parse(raw if isinstance(raw, bytes) else raw.encode())

    @property
    def client(self) -> RedisClient:
        return self._redis

    def complete_command(
        self, user: str, key: str, request_hash: str, status_code: int, response: bytes
    ) -> RedisCommand:
        """`complete` as a raw command, for a caller that sends it along with other commands."""
        return ("SET", redis_key(user, key), _done(request_hash, status_code, response), "EX", self._ttl_s)

    async def complete(
        self, user: str, key: str, request_hash: str, status_code: int, response: bytes
    ) -> None:
        value = _done(request_hash, status_code, response)
        try:
            await self._redis.set(redis_key(user, key), value, ex=self._ttl_s)
        except REDIS_FAILURES as exc:
            log.warning("idempotency record not cached: %s", exc)

    async def release(self, user: str, key: str) -> None:
        try:
            await self._redis.delete(redis_key(user, key))
        except REDIS_FAILURES as exc:
            log.warning("idempotency reservation not released: %s", exc)


class MemoryIdempotencyStore:
    """The same semantics in process (`keel up` without Redis), bounded and expiring."""

    def __init__(
        self, ttl_s: int = TTL_S, max_entries: int = 100_000, pending_ttl_s: int = PENDING_TTL_S
    ) -> None:
        self._ttl_s = ttl_s
        self._pending_ttl_s = pending_ttl_s
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def _get(self, name: str) -> bytes | None:
        entry = self._entries.get(name)
        if entry is None or entry[0] < time.monotonic():
            self._entries.pop(name, None)
            return None
        return entry[1]

    def _put(self, name: str, value: bytes, ttl_s: float | None = None) -> None:
        self._entries[name] = (time.monotonic() + (ttl_s or self._ttl_s), value)
        self._entries.move_to_end(name)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def reserve(self, user: str, key: str, request_hash: str) -> Reservation:
        name = redis_key(user, key)
        raw = self._get(name)
        if raw is None:
            self._put(name, _pending(request_hash), self._pending_ttl_s)
            return Reservation(State.NEW, request_hash)
        return _parse(raw)

    async def complete(
        self, user: str, key: str, request_hash: str, status_code: int, response: bytes
    ) -> None:
        self._put(redis_key(user, key), _done(request_hash, status_code, response))

    async def release(self, user: str, key: str) -> None:
        self._entries.pop(redis_key(user, key), None)


class Completion(Protocol):
    """Records a key as done and invalidates a cache prefix: what a create does once it committed."""

    def __call__(
        self, prefix: str, user: str, key: str, request_hash: str, status_code: int, response: bytes
    ) -> Awaitable[None]: ...


def completion(cache: Cache, store: IdempotencyStore) -> Completion:
    """The invalidation, then the key recorded (a record without its invalidation would replay a
    ticket that a list read just before might not show yet)."""

    async def complete(
        prefix: str, user: str, key: str, request_hash: str, status_code: int, response: bytes
    ) -> None:
        await cache.delete_prefix(prefix)
        await store.complete(user, key, request_hash, status_code, response)

    return complete


def redis_completion(cache: RedisCache, store: RedisIdempotencyStore) -> Completion:
    """The same in one Redis round trip, for a cache and a store on one client (wired so by the spec)."""
    if cache.client is not store.client:
        raise ValueError("the cache and the idempotency store must share their Redis client")

    async def complete(
        prefix: str, user: str, key: str, request_hash: str, status_code: int, response: bytes
    ) -> None:
        done = store.complete_command(user, key, request_hash, status_code, response)
        await cache.delete_prefix(prefix, also=[done])

    return complete
