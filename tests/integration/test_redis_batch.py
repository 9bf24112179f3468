"""Concurrent callers' Redis commands go in one pipeline (keel.core.redis_batch): each caller gets its
own replies, in its order; an error reply reaches its caller alone; a Redis that is down fails all."""

from __future__ import annotations

import asyncio
import uuid

from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from keel.core.cache import redis_client
from keel.core.redis_batch import RedisBatch
from tests.support.servers import free_port


def _batches(name: str) -> tuple[float, float]:
    labels = {"batch": f"redis-{name}"}
    count = REGISTRY.get_sample_value("group_commit_batch_size_count", labels) or 0.0
    total = REGISTRY.get_sample_value("group_commit_batch_size_sum", labels) or 0.0
    return count, total


async def test_concurrent_callers_share_pipelines_and_each_gets_its_own_replies_in_order(redis_url):
    client = redis_client(redis_url, timeout_s=2.0)
    name = f"test-{uuid.uuid4().hex[:8]}"
    batch = RedisBatch(client, name)
    prefix = f"batch:{name}:"
    try:
        replies = await asyncio.gather(
            *(batch.execute(("SET", f"{prefix}{i}", f"v{i}"), ("GET", f"{prefix}{i}")) for i in range(50))
        )
        pipelines, callers = _batches(name)
    finally:
        await client.aclose()
    assert replies == [[True, f"v{i}".encode()] for i in range(50)]
    assert callers == 50 and pipelines < 10  # 50 callers' 100 commands in a few round trips
    print(f"50 callers in {pipelines:.0f} pipelines")


async def test_an_error_reply_is_raised_to_its_caller_alone(redis_url):
    client = redis_client(redis_url, timeout_s=2.0)
    batch = RedisBatch(client, f"test-{uuid.uuid4().hex[:8]}")
    key = f"batch:{uuid.uuid4().hex}"
    try:
        await client.set(key, "not a number")
        ok, failed, counted = await asyncio.gather(
            batch.execute(("GET", key)),
            batch.execute(("INCR", key)),
            batch.execute(("INCR", f"{key}:n"), ("INCR", f"{key}:n")),
            return_exceptions=True,
        )
    finally:
        await client.aclose()
    assert ok == [b"not a number"]
    assert isinstance(failed, ResponseError) and "not an integer" in str(failed)
    assert counted == [1, 2]


async def test_a_redis_that_is_down_fails_every_caller_of_the_batch():
    client = redis_client(f"redis://127.0.0.1:{free_port()}", timeout_s=0.5)
    batch = RedisBatch(client, f"test-{uuid.uuid4().hex[:8]}")
    try:
        results = await asyncio.gather(*(batch.execute(("PING",)) for _ in range(5)), return_exceptions=True)
    finally:
        await client.aclose()
    assert len(results) == 5 and all(isinstance(r, RedisConnectionError) for r in results), results
