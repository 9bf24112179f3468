"""Redis commands of concurrent callers sent together: one pipeline per batch, as keel.core.batching
sends their database writes in one statement.

A caller hands over its commands (one or several, kept in order and in one pipeline) and gets their
replies. Under load a create's Redis work (its key reserved, then recorded with its lists'
invalidation) is a few microseconds of encoding in a pipeline shared with the other requests of the
moment, instead of a round trip of its own with the client's whole call path around it. An idle
service sends a lone caller's commands at once. A reply that is an error is raised to its caller
alone; a connection that fails fails every caller of that batch, as their own calls would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keel.core.batching import GroupCommit
from keel.core.redis_topology import RedisClient

RedisCommand = tuple[str | bytes | int, ...]
Commands = tuple[RedisCommand, ...]


class RedisBatch:
    def __init__(self, client: RedisClient, name: str, *, max_batch: int = 128) -> None:
        self._client = client
        self._group: GroupCommit[Commands, list[Any]] = GroupCommit(
            f"redis-{name}", self._send, max_batch=max_batch
        )

    async def execute(self, *commands: RedisCommand) -> list[Any]:
        """The replies to `commands`, sent in this order in one pipeline."""
        replies = await self._group.submit(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _send(self, batch: Sequence[Commands]) -> list[list[Any]]:
        async with self._client.pipeline(transaction=False) as pipe:
            for commands in batch:
                for command in commands:
                    pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        results, start = [], 0
        for commands in batch:
            results.append(replies[start : start + len(commands)])
            start += len(commands)
        return results
