"""Keel's Redis users again, with REDIS_URL naming another topology (a Cluster, Sentinels, one server
over TLS): each module here sets `redis_url` to its topology and imports the tests that already prove
those users on one plain server, so the same assertions hold whichever topology runs underneath.
(tests/chaos/test_redis_sentinel_failover.py also runs the tickets service through Sentinels across a
kill -9 of the primary.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from keel.core.redis_topology import RedisClient, RedisTopology


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[RedisClient]:
    client = RedisTopology.parse(redis_url).client()
    await client.ping()  # connected before use, as the platform does at start
    yield client
    await client.aclose()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The imported tests' in-process variants ([memory]) do not depend on REDIS_URL: run once elsewhere."""
    here = [i for i in items if "redis_topologies" in str(i.fspath)]
    kept = [i for i in here if "memory" not in getattr(getattr(i, "callspec", None), "params", {}).values()]
    dropped = [i for i in here if i not in kept]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if i not in dropped]
