"""The in-process cache adapter: a bounded LRU with TTL, the default under `keel up`."""

from __future__ import annotations

import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from keel.core.cache.port import SingleFlightCache, check_prefix, invalidation_points

log = logging.getLogger("keel.cache")

Stamp = tuple[int, ...]


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires_at: float
    stamp: Stamp


@dataclass(slots=True)
class _Generation:
    value: int
    forget_at: float


class MemoryCache(SingleFlightCache[Stamp]):
    """At most `max_entries` values, least recently used evicted first; nothing shared across processes.

    Invalidation keeps a generation per prefix (and per deleted key) instead of scanning entries, as
    the Redis adapter does, so both behave alike and an invalidation costs O(1). A generation may be
    forgotten `max_ttl_s` after its last bump: every entry written under the older one has expired
    by then, because entry TTLs are capped at `max_ttl_s`.
    """

    def __init__(
        self,
        max_entries: int,
        *,
        name: str = "memory",
        max_ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        super().__init__(name)
        self.max_entries = max_entries
        self.max_ttl_s = max_ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._generations: dict[str, _Generation] = {}
        self._max_generations = max(1024, 4 * max_entries)
        self._sequence = itertools.count(1)
        # What a point with no generation reads as; moved on when the generations are reset wholesale,
        # so that a stamp taken before the reset can never match again.
        self._epoch = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def _read(self, key: str, *, count: bool) -> tuple[bytes | None, Stamp | None]:
        now = self._clock()
        stamp = self._stamp(key, now)
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at > now and entry.stamp == stamp:
            self._entries.move_to_end(key)
            if count:
                self._hits.inc()
            return entry.value, stamp
        if entry is not None:
            del self._entries[key]
        if count:
            self._misses.inc()
        return None, stamp

    async def _write(self, key: str, value: bytes, ttl_s: float, stamp: Stamp | None) -> None:
        now = self._clock()
        current = self._stamp(key, now)
        if stamp is not None and stamp != current:
            return  # invalidated while it was being loaded: storing it would only store a stale value
        self._entries[key] = _Entry(value, now + min(ttl_s, self.max_ttl_s), current)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def delete(self, *keys: str) -> None:
        self._detach_flights(keys=keys)
        for key in keys:
            self._entries.pop(key, None)
            self._bump(key)

    async def delete_prefix(self, prefix: str) -> None:
        check_prefix(prefix)
        self._detach_flights(prefix=prefix)
        self._bump(prefix)

    def _stamp(self, key: str, now: float) -> Stamp:
        stamp = []
        for point in invalidation_points(key):
            generation = self._generations.get(point)
            if generation is not None and generation.forget_at > now:
                stamp.append(generation.value)
            else:
                stamp.append(self._epoch)
        return tuple(stamp)

    def _bump(self, point: str) -> None:
        now = self._clock()
        self._generations[point] = _Generation(next(self._sequence), now + self.max_ttl_s)
        if len(self._generations) > self._max_generations:
            self._forget_generations(now)

    def _forget_generations(self, now: float) -> None:
        self._generations = {p: g for p, g in self._generations.items() if g.forget_at > now}
        if len(self._generations) > self._max_generations // 2:
            # Too many live invalidations to track: dropping every entry with them is always safe.
            log.info("cache %s: %d live invalidations, clearing it", self.name, len(self._generations))
            self._generations.clear()
            self._entries.clear()
            self._epoch = next(self._sequence)
