"""The ready-audio list per route: a port and two adapters — Redis (a sorted set by story position and a
hash of details per route, both expiring) and an in-process one with the same semantics.

Writing the same audio id again overwrites it (never a second entry); the list of a route expires
`ttl_s` after its last write."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import orjson

from keel.core.redis_topology import RedisClient


@dataclass(frozen=True, slots=True)
class ReadyAudio:
    audio_id: str
    story_id: str
    position: float
    duration_s: float | None


class UnknownAudio(LookupError):
    """`after` names an audio that is not (or no longer) in the route's list."""


class ReadyAudioStore(Protocol):
    async def put(self, route_id: str, audio: ReadyAudio) -> None: ...

    async def put_many(self, ready: Sequence[tuple[str, ReadyAudio]]) -> None:
        """`put` for each (route_id, audio), in one round trip where the store has round trips."""
        ...

    async def next(self, route_id: str, count: int, after: str | None = None) -> list[ReadyAudio]:
        """Up to `count` audio in story order, after `after` when given (UnknownAudio if it is not listed)."""
        ...


class MemoryReadyAudioStore:
    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._routes: dict[str, tuple[float, dict[str, ReadyAudio]]] = {}

    async def put(self, route_id: str, audio: ReadyAudio) -> None:
        _, items = self._live(route_id) or (0.0, {})
        items[audio.audio_id] = audio
        self._routes[route_id] = (self._clock() + self._ttl_s, items)

    async def put_many(self, ready: Sequence[tuple[str, ReadyAudio]]) -> None:
        for route_id, audio in ready:
            await self.put(route_id, audio)

    async def next(self, route_id: str, count: int, after: str | None = None) -> list[ReadyAudio]:
        _, items = self._live(route_id) or (0.0, {})
        ordered = sorted(items.values(), key=lambda a: (a.position, a.audio_id))
        start = 0
        if after is not None:
            ids = [a.audio_id for a in ordered]
            if after not in ids:
                raise UnknownAudio(after)
            start = ids.index(after) + 1
        return ordered[start : start + count]

    def _live(self, route_id: str) -> tuple[float, dict[str, ReadyAudio]] | None:
        entry = self._routes.get(route_id)
        if entry is not None and entry[0] <= self._clock():
            del self._routes[route_id]
            return None
        return entry


# One round trip for a page: the rank of `after` (when given), the ids after it and their details.
# nil (None) when `after` is not listed, so "unknown" and "nothing ready yet" stay apart.
_NEXT_PAGE = """
local start = 0
if #ARGV > 1 then
  local rank = redis.call('ZRANK', KEYS[1], ARGV[2])
  if not rank then return false end
  start = rank + 1
end
local ids = redis.call('ZRANGE', KEYS[1], start, start + tonumber(ARGV[1]) - 1)
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(ids))
"""
# One audio onto its route's list and details, atomically (a Redis Cluster runs a MULTI only within a
# slot, and one put_many spans routes). KEYS: the route's order and details; ARGV: audio id,
# position, details, TTL.
_PUT = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
"""


class RedisReadyAudioStore:
    def __init__(self, redis: RedisClient, ttl_s: int, *, prefix: str = "keel:") -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._prefix = f"{prefix}cityguide:ready:"
        # EVALSHA, loading the script again after a Redis restart forgot it.
        self._next_page = redis.register_script(_NEXT_PAGE)

    def _keys(self, route_id: str) -> tuple[str, str]:
        # The route id as the hash tag: both keys in one Cluster slot, for the scripts that use both.
        base = f"{self._prefix}{{{route_id}}}"
        return f"{base}:order", f"{base}:audio"

    async def put(self, route_id: str, audio: ReadyAudio) -> None:
        await self.put_many([(route_id, audio)])

    async def put_many(self, ready: Sequence[tuple[str, ReadyAudio]]) -> None:
        if not ready:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for route_id, audio in ready:
                details = orjson.dumps(asdict(audio))
                pipe.eval(
                    _PUT, 2, *self._keys(route_id), audio.audio_id, audio.position, details, self._ttl_s
                )
            await pipe.execute()

    async def next(self, route_id: str, count: int, after: str | None = None) -> list[ReadyAudio]:
        args: list[str | int] = [count] if after is None else [count, after]
        raw: list[bytes | None] | None = await self._next_page(keys=self._keys(route_id), args=args)
        if raw is None:
            raise UnknownAudio(after)
        return [ReadyAudio(**orjson.loads(r)) for r in raw if r is not None]
