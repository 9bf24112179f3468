"""The cache port: byte values under `:`-separated keys, prefix invalidation, single-flight cache-aside."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Generic, Protocol, TypeVar, runtime_checkable

from keel.core.metrics import CACHE_REQUESTS, counted

SEPARATOR = ":"

Loader = Callable[[], Awaitable[bytes]]
StampT = TypeVar("StampT")


@runtime_checkable
class Cache(Protocol):
    """What services see. Adapters: `MemoryCache` (in-process) and `RedisCache` (shared).

    Keys are `:`-separated (`tickets:list:<user>:<status>:<limit>:<offset>`). `delete_prefix` takes a
    prefix that ends at a separator (`tickets:list:<user>:`) and invalidates every key under it in
    O(1), whatever the number of keys; `delete` invalidates single keys. A value loaded by
    `get_or_load` before an invalidation is never served after it, even if it lands later.
    A free-form segment (a user id) containing the separator only adds invalidation points.

    A cache is an optimisation: adapters never raise because their own backend is down; they
    answer "miss", skip writes and count the error.
    """

    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> None: ...

    async def get_or_load(self, key: str, loader: Loader, ttl_s: float) -> bytes:
        """The cached value, or `loader()`'s, stored for `ttl_s`. Concurrent misses of one key in this
        process share one `loader()` call; a loader exception reaches every waiter and is not cached."""
        ...


def invalidation_points(key: str) -> list[str]:
    """What can invalidate `key`: each of its prefixes that ends at a separator, and the key itself.

    Adapters keep a generation per point; `delete_prefix(p)` and `delete(k)` move one on, and a value
    is live only while the generations it was written under are all still current."""
    points = [key[: i + 1] for i, ch in enumerate(key) if ch == SEPARATOR]
    if not key.endswith(SEPARATOR):
        points.append(key)
    return points


def check_prefix(prefix: str) -> None:
    # Invalidation is tracked per separator-bounded prefix (see the adapters); "tickets:li" would
    # silently match nothing, so it is refused loudly instead.
    if not prefix.endswith(SEPARATOR):
        raise ValueError(f"cache prefix must end with {SEPARATOR!r}: {prefix!r}")


class SingleFlightCache(ABC, Generic[StampT]):
    """Cache-aside with one loader call per key and process, shared by both adapters.

    Adapters supply `_read` (the value and a *stamp* of the key's invalidation state at read time) and
    `_write` (store unless the stamp is stale). Writing a loaded value under the stamp read *before*
    loading closes the classic cache-aside race: if the source changed and `delete_prefix`/`delete`
    ran while the loader was reading the old row, the stale value is stored already invalid.
    """

    name: str

    def __init__(self, name: str) -> None:
        self.name = name
        self._flights: dict[str, asyncio.Task[bytes]] = {}
        self._hits = counted(CACHE_REQUESTS.labels(name, "hit"))
        self._misses = CACHE_REQUESTS.labels(name, "miss")
        self._errors = CACHE_REQUESTS.labels(name, "error")

    @abstractmethod
    async def _read(self, key: str, *, count: bool) -> tuple[bytes | None, StampT | None]:
        """The live value (or None) and the stamp to write a loaded value under.

        The stamp is None when the backend is unavailable: the loaded value is then not written."""

    @abstractmethod
    async def _write(self, key: str, value: bytes, ttl_s: float, stamp: StampT | None) -> None:
        """Store `value` as of `stamp` (already invalid if an invalidation happened since), or as of now."""

    async def get(self, key: str) -> bytes | None:
        value, _ = await self._read(key, count=True)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        _check_ttl(ttl_s)
        await self._write(key, value, ttl_s, None)

    async def get_or_load(self, key: str, loader: Loader, ttl_s: float) -> bytes:
        _check_ttl(ttl_s)
        flight = self._flights.get(key)
        if flight is None:
            value, stamp = await self._read(key, count=True)
            if value is not None:
                return value
            flight = self._flights.get(key)  # another caller may have started one while we read
            if flight is None:
                fill = self._fill(key, loader, ttl_s, degraded=stamp is None)
                flight = asyncio.create_task(fill, name=f"cache-fill:{self.name}")
                self._flights[key] = flight
                flight.add_done_callback(partial(self._landed, key))
        else:
            self._misses.inc()
        # The load runs in its own task: a caller that is cancelled (client gone, deadline) leaves it
        # running for the others instead of cancelling their shared result.
        return await asyncio.shield(flight)

    async def _fill(self, key: str, loader: Loader, ttl_s: float, degraded: bool) -> bytes:
        if degraded:
            return await loader()  # the backend just failed: neither re-read nor write (nor wait on it)
        # Read again inside the flight: a caller whose first read missed just before an earlier
        # flight landed finds that flight's value here instead of loading a second time.
        value, stamp = await self._read(key, count=False)
        if value is not None:
            return value
        return await self._load(key, loader, ttl_s, stamp)

    async def _load(self, key: str, loader: Loader, ttl_s: float, stamp: StampT | None) -> bytes:
        """Call the loader and store its value as of `stamp`; adapters may wrap it (a lock, say)."""
        value = await loader()
        if stamp is not None:
            await self._write(key, value, ttl_s, stamp)
        return value

    def _detach_flights(self, *, keys: tuple[str, ...] = (), prefix: str | None = None) -> None:
        """Called on invalidation: a caller arriving after it must not join a load that began before
        it (it would be handed the old value). The detached load still finishes for its own callers,
        and its write is refused by its stale stamp."""
        for key in keys:
            self._flights.pop(key, None)
        if prefix is not None:
            for key in [k for k in self._flights if k.startswith(prefix)]:
                del self._flights[key]

    def _landed(self, key: str, flight: asyncio.Task[bytes]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved here so a failure nobody awaited is not reported as lost


def _check_ttl(ttl_s: float) -> None:
    if not ttl_s > 0:
        raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
