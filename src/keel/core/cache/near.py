"""`NearCache`: the cache port with this process's recent values in front of any other cache.

A hot value (a user polling their ticket list) is then answered without a round trip to the shared
cache, which was most of a hit's cost (bench/results/profile-*.md). Keys are split at their last
separator into an owner (`tickets:list:<user>:`) and a page; invalidating an owner's prefix drops its
pages here after the shared cache, so a writer sees its write at once and other replicas within
`ttl_s`. Callers use `get_or_load`, `invalidate` and, on a path that must not await, `peek`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Generic, TypeVar

from keel.core.cache.port import SEPARATOR, Cache, Loader, check_prefix
from keel.core.cache.recent import DEFAULT_TTL_S, RecentPages

C = TypeVar("C", bound=Cache)


def _split(key: str) -> tuple[str, str]:
    owner, sep, page = key.rpartition(SEPARATOR)
    return owner + sep, page


class NearCache(Generic[C]):
    """Wraps `shared` (any `Cache`); `near` holds the recent values (its TTL is how stale another
    replica's write may be seen)."""

    def __init__(self, shared: C, near: RecentPages | None = None, *, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.shared = shared
        self.name = shared.name
        self._near = near or RecentPages(f"{shared.name}-near", ttl_s)

    def peek(self, key: str) -> bytes | None:
        """The value if this process served it a moment ago; never any I/O."""
        owner, page = _split(key)
        return self._near.get(owner, page)

    async def get_or_load(self, key: str, loader: Loader, ttl_s: float) -> bytes:
        owner, page = _split(key)
        value = self._near.get(owner, page)
        if value is not None:
            return value
        # Taken before the load: a value loaded while its owner was invalidated is not kept here.
        version = self._near.version(owner)
        value = await self.shared.get_or_load(key, loader, ttl_s)
        self._near.put(owner, page, value, version)
        return value

    async def invalidate(self, prefix: str, shared: Awaitable[None] | None = None) -> None:
        """Drop every value under `prefix`, an owner's prefix (a key up to its last separator): in the
        shared cache, then here. `shared`: the caller's own call that invalidates the shared cache (one
        that sends a write of its own in the same round trip), awaited instead of `delete_prefix`."""
        check_prefix(prefix)
        await (shared if shared is not None else self.shared.delete_prefix(prefix))
        # After the shared cache: a value loaded from it before its invalidation is refused here,
        # one loaded after is fresh.
        self._near.forget(prefix)
