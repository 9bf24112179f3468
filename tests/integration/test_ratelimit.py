"""Per-caller rate limits through a real app: 429 in the envelope with Retry-After, callers apart,
one window shared across instances through Redis, and requests allowed while Redis is down."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
import pytest_asyncio
from fastapi import APIRouter, Depends, FastAPI
from limits.aio.storage import Storage
from prometheus_client import REGISTRY

from keel.core.app import create_app, error_responses
from keel.core.breaker import CircuitBreaker
from keel.core.ratelimit import RateLimiter, address_of, memory_storage, redis_storage
from keel.core.settings import Settings
from tests.support import servers
from tests.support.eventually import eventually


def limited_app(limiter: RateLimiter) -> FastAPI:
    router = APIRouter()

    @router.get("/things", dependencies=[Depends(limiter.dependency)], responses=error_responses(429))
    async def things() -> dict[str, bool]:
        return {"ok": True}

    return create_app(title="limited", settings=Settings(_env_file=None), routers=[router])


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t")


def decisions(limiter: RateLimiter, outcome: str) -> float:
    labels = {"limiter": limiter.name, "outcome": outcome}
    return REGISTRY.get_sample_value("rate_limit_decisions_total", labels) or 0.0


def unique_name() -> str:
    return f"things-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest, key_prefix: str) -> Storage:
    if request.param == "memory":
        return memory_storage()
    # A generous timeout so that a loaded machine cannot make the limiter fail open here.
    return redis_storage(request.getfixturevalue("redis_url"), key_prefix=key_prefix, timeout_s=2.0)


@pytest_asyncio.fixture
async def make_client(storage: Storage) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    opened: list[httpx.AsyncClient] = []

    def make(limit: str) -> httpx.AsyncClient:
        opened.append(client_for(limited_app(RateLimiter(limit, storage, name=unique_name()))))
        return opened[-1]

    yield make
    for client in opened:
        await client.aclose()


async def test_request_over_the_limit_gets_429_with_retry_after_in_the_error_envelope(make_client) -> None:
    client = make_client("5/minute")
    for _ in range(5):
        assert (await client.get("/things", headers={"X-User-Id": "alice"})).status_code == 200

    response = await client.get("/things", headers={"X-User-Id": "alice", "X-Request-Id": "req-6"})

    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert "5/minute" in error["message"]
    assert error["request_id"] == "req-6"


async def test_one_callers_requests_do_not_limit_another(make_client) -> None:
    client = make_client("3/minute")
    for _ in range(4):
        await client.get("/things", headers={"X-User-Id": "alice"})
    assert (await client.get("/things", headers={"X-User-Id": "alice"})).status_code == 429
    assert (await client.get("/things", headers={"X-User-Id": "bob"})).status_code == 200
    assert (await client.get("/things")).status_code == 200  # anonymous callers count by address


async def test_callers_without_a_user_id_are_limited_by_their_address(make_client) -> None:
    client = make_client("2/minute")
    statuses = [(await client.get("/things")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert (await client.get("/things", headers={"X-User-Id": "alice"})).status_code == 200


async def test_a_limiter_keyed_by_address_counts_every_user_id_from_one_address(storage: Storage) -> None:
    limiter = RateLimiter("2/minute", storage, name=unique_name(), key=address_of)
    async with client_for(limited_app(limiter)) as client:
        statuses = [
            (await client.get("/things", headers={"X-User-Id": f"u{i}"})).status_code for i in range(3)
        ]
    assert statuses == [200, 200, 429]


async def test_retry_after_is_when_the_oldest_request_leaves_the_window(make_client) -> None:
    client = make_client("2 per 2 seconds")
    await client.get("/things", headers={"X-User-Id": "alice"})
    await client.get("/things", headers={"X-User-Id": "alice"})
    refused = await client.get("/things", headers={"X-User-Id": "alice"})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "2"

    began = time.monotonic()
    await eventually(
        lambda: client.get("/things", headers={"X-User-Id": "alice"}),
        until=lambda r: r.status_code == 200,
        timeout_s=4,
        what="a slot freed",
    )
    # Freed when the oldest request leaves its 2 s window, not a whole window after the refusal (4 s);
    # the margin is the polling's round trips on a loaded runner (over TLS in the topology suites).
    assert time.monotonic() - began <= 3.0


async def test_two_app_instances_share_one_window_through_redis(redis_url: str, key_prefix: str) -> None:
    name = unique_name()
    # Two instances of a service: each its own app, limiter and Redis connection; one window.
    first = RateLimiter("5/minute", redis_storage(redis_url, key_prefix=key_prefix, timeout_s=2.0), name=name)
    second = RateLimiter(
        "5/minute", redis_storage(redis_url, key_prefix=key_prefix, timeout_s=2.0), name=name
    )
    async with client_for(limited_app(first)) as a, client_for(limited_app(second)) as b:
        statuses = [
            (await c.get("/things", headers={"X-User-Id": "alice"})).status_code for c in (a, b, a, b, a)
        ]
        assert statuses == [200] * 5
        assert (await b.get("/things", headers={"X-User-Id": "alice"})).status_code == 429
        assert (await a.get("/things", headers={"X-User-Id": "alice"})).status_code == 429


@pytest.fixture
def private_redis() -> Iterator[servers.ChildServer]:
    """A redis-server of this test's own, to stop without touching anyone else's."""
    with servers.running(servers.redis_server()) as server:
        yield server


async def test_requests_are_allowed_while_the_redis_store_is_down(private_redis: servers.ChildServer) -> None:
    storage = redis_storage(f"redis://127.0.0.1:{private_redis.port}/0", timeout_s=0.2)
    limiter = RateLimiter(
        "2/minute", storage, name=unique_name(), breaker=CircuitBreaker("t", reset_after_s=0.2)
    )
    async with client_for(limited_app(limiter)) as client:
        assert [(await client.get("/things")).status_code for _ in range(3)] == [200, 200, 429]

        private_redis.stop()
        # Another caller (this one's refusal is remembered for a moment, store or not).
        client.headers["X-User-Id"] = "another"
        timings = []
        for _ in range(50):
            began = time.perf_counter()
            assert (await client.get("/things")).status_code == 200
            timings.append((time.perf_counter() - began) * 1000)
        print(
            f"\nrate limit store down: request p50 {statistics.median(timings):.2f} ms, "
            f"max {max(timings):.1f} ms over {len(timings)} requests"
        )
        assert decisions(limiter, "failed_open") == 50

        private_redis.start()  # empty: the window starts over once the store answers again
        await eventually(
            lambda: client.get("/things"), until=lambda r: r.status_code == 429, what="limiting resumed"
        )


async def test_the_sliding_window_counter_limits_too(key_prefix: str, redis_url: str) -> None:
    storage = redis_storage(redis_url, key_prefix=key_prefix, timeout_s=2.0)
    limiter = RateLimiter("3/minute", storage, name=unique_name(), strategy="sliding-window-counter")
    async with client_for(limited_app(limiter)) as client:
        statuses = [(await client.get("/things", headers={"X-User-Id": "u"})).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert decisions(limiter, "allowed") == 3 and decisions(limiter, "limited") == 1


def store_calls(port: int) -> int:
    """Scripts the Redis server on `port` has run (its own statistics): the limiter's round trips."""
    import redis

    with redis.Redis(port=port) as client:
        stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


async def test_a_busy_caller_takes_permits_in_leases_and_the_store_sees_few_requests(
    private_redis: servers.ChildServer,
) -> None:
    storage = redis_storage(f"redis://127.0.0.1:{private_redis.port}/0", timeout_s=2.0)
    limiter = RateLimiter("100000/second", storage, name=unique_name())
    before = store_calls(private_redis.port)
    for _ in range(2_000):
        await limiter.check("busy")
    calls = store_calls(private_redis.port) - before
    assert decisions(limiter, "allowed") == 2_000
    # Batches double up to 256: 1 + 2 + ... + 256 covers the first 511, then one call per 256.
    assert 0 < calls <= 20, f"{calls} store round trips for 2,000 requests"
    print(f"\nrate limit leases: 2,000 requests of one caller, {calls} Redis round trips")


async def test_leases_refuse_exactly_at_the_limit_in_one_process_even_under_concurrency(
    storage: Storage,
) -> None:
    import asyncio

    from keel.core.errors import TooManyRequests

    limiter = RateLimiter("40/minute", storage, name=unique_name())  # leases of up to 4
    outcomes = await asyncio.gather(*(limiter.check("alice") for _ in range(50)), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, TooManyRequests)]
    assert outcomes.count(None) == 40 and len(refused) == 10
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)


async def test_two_processes_leasing_one_window_never_pass_the_limit(redis_url: str, key_prefix: str) -> None:
    from keel.core.errors import TooManyRequests

    name = unique_name()
    first, second = (
        RateLimiter("40/minute", redis_storage(redis_url, key_prefix=key_prefix, timeout_s=2.0), name=name)
        for _ in range(2)
    )
    allowed = 0
    for n in range(80):
        try:
            await (first if n % 2 else second).check("alice")
            allowed += 1
        except TooManyRequests:
            pass
    # Permits one process leased and did not use are lost to the other: never more, at most two
    # leases (4 each) fewer.
    assert 32 <= allowed <= 40, allowed
