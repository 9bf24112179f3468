"""Pages this process served a moment ago, kept in front of the shared cache (a near cache).

A hot page (a user polling their ticket list, an app polling a route's prefetch) is then answered
without a Redis round trip, which was most of a cache hit's cost (bench/results/profile-*.md). A page
lives `ttl_s`; this process's own writes drop the owner's pages at once (`forget`), so a writer always
sees its write here, and a write through another replica is seen within `ttl_s`. A page loaded while
its owner was written is not stored: it may predate the write.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable

from keel.core.metrics import CACHE_REQUESTS, counted

DEFAULT_TTL_S = 0.5

Version = tuple[int, int]


class RecentPages:
    def __init__(
        self,
        name: str,
        ttl_s: float = DEFAULT_TTL_S,
        max_owners: int = 10_000,
        max_pages_per_owner: int = 32,
        max_bytes: int = 32 * 2**20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_owners = max_owners
        self._max_pages = max_pages_per_owner
        # The bodies held, whatever the owners and pages: expired pages stay until they are replaced
        # or evicted, so the owner and page counts alone would let large pages take gigabytes.
        self._max_bytes = max_bytes
        self._bytes = 0
        self._clock = clock
        # owner → page → (expires at, body); least recently stored owner first.
        self._pages: OrderedDict[str, dict[str, tuple[float, bytes]]] = OrderedDict()
        # Moved on by `forget`: a page loaded while its owner was written is not stored.
        self._versions: dict[str, int] = {}
        self._sequence = itertools.count(1)
        self._epoch = 0
        self._hits = counted(CACHE_REQUESTS.labels(name, "hit"))

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    def get(self, owner: str, page: str) -> bytes | None:
        entry = self._pages.get(owner, {}).get(page)
        if entry is None or entry[0] <= self._clock():
            return None  # the shared cache behind counts the miss
        self._hits.inc()
        return entry[1]

    def version(self, owner: str) -> Version:
        return self._epoch, self._versions.get(owner, 0)

    def put(self, owner: str, page: str, body: bytes, version: Version) -> None:
        """Store `body`, loaded after `version(owner)` returned `version`, unless `forget(owner)` came since."""
        if self.version(owner) != version or len(body) > self._max_bytes:
            return
        pages = self._pages.setdefault(owner, {})
        if len(pages) >= self._max_pages and page not in pages:
            self._bytes -= _size(pages)
            pages.clear()
        replaced = pages.get(page)
        self._bytes += len(body) - (0 if replaced is None else len(replaced[1]))
        pages[page] = (self._clock() + self._ttl_s, body)
        self._pages.move_to_end(owner)
        while len(self._pages) > self._max_owners or self._bytes > self._max_bytes:
            _, evicted = self._pages.popitem(last=False)
            self._bytes -= _size(evicted)

    @property
    def size_bytes(self) -> int:
        """The bodies held now (at most `max_bytes`)."""
        return self._bytes

    def forget(self, owner: str) -> None:
        """The owner was written: none of its pages may be served from here any more."""
        self._bytes -= _size(self._pages.pop(owner, {}))
        self._versions[owner] = next(self._sequence)
        if len(self._versions) > self._max_owners:
            # Versions only guard the loads in flight; a new epoch refuses all of those at once.
            self._versions.clear()
            self._pages.clear()
            self._bytes = 0
            self._epoch = next(self._sequence)


def _size(pages: dict[str, tuple[float, bytes]]) -> int:
    return sum(len(body) for _, body in pages.values())
