"""List pages this process served a moment ago, kept in front of the shared cache.

A hot page (a user polling their list) is then answered without a Redis round trip, which was most
of a cache hit's cost (bench/results/profile-tickets-list.md). A page lives `ttl_s`, and this
process's own creates and closes drop the user's pages at once, so a user always sees their own
write here; a write through another replica is seen within `ttl_s`.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable

from keel.core.metrics import CACHE_REQUESTS

DEFAULT_TTL_S = 0.5

Version = tuple[int, int]


class RecentPages:
    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        max_users: int = 10_000,
        max_pages_per_user: int = 32,
        clock: Callable[[], float] = time.monotonic,
        name: str = "tickets-pages",
    ) -> None:
        self._ttl_s = ttl_s
        self._max_users = max_users
        self._max_pages = max_pages_per_user
        self._clock = clock
        # user → page → (expires at, body); least recently stored user first.
        self._pages: OrderedDict[str, dict[str, tuple[float, bytes]]] = OrderedDict()
        # Moved on by `forget`: a page loaded while its user wrote is not stored (it may predate the write).
        self._versions: dict[str, int] = {}
        self._sequence = itertools.count(1)
        self._epoch = 0
        self._hits = CACHE_REQUESTS.labels(name, "hit")

    def get(self, user: str, page: str) -> bytes | None:
        entry = self._pages.get(user, {}).get(page)
        if entry is None or entry[0] <= self._clock():
            return None  # the shared cache behind counts the miss
        self._hits.inc()
        return entry[1]

    def version(self, user: str) -> Version:
        return self._epoch, self._versions.get(user, 0)

    def put(self, user: str, page: str, body: bytes, version: Version) -> None:
        """Store `body`, loaded after `version(user)` returned `version`, unless the user wrote since."""
        if self.version(user) != version:
            return
        pages = self._pages.setdefault(user, {})
        if len(pages) >= self._max_pages:
            pages.clear()
        pages[page] = (self._clock() + self._ttl_s, body)
        self._pages.move_to_end(user)
        while len(self._pages) > self._max_users:
            self._pages.popitem(last=False)

    def forget(self, user: str) -> None:
        """The user wrote: none of their pages may be served from here any more."""
        self._pages.pop(user, None)
        self._versions[user] = next(self._sequence)
        if len(self._versions) > self._max_users:
            # Versions only guard the loads in flight; a new epoch refuses all of those at once.
            self._versions.clear()
            self._pages.clear()
            self._epoch = next(self._sequence)
