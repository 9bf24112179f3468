"""Keel's Redis users again, with REDIS_URL naming a Sentinel group or a Redis Cluster: each module
here sets `redis_url` to its topology and imports the tests that already prove those users on one
server, so the same assertions hold whichever topology runs underneath."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from keel.core.redis_topology import RedisClient, RedisTopology


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[RedisClient]:
    client = RedisTopology.parse(redis_url).client()
    yield client
    await client.aclose()
