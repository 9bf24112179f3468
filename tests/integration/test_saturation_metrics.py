"""Saturation figures on /metrics move with the load: requests in flight, the database pool while a
connection is held, the Redis pool, and the event-loop lag while a call blocks the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
from fastapi import APIRouter
from prometheus_client.parser import text_string_to_metric_families

from keel.core.app import create_app
from keel.core.metrics import DEPENDENCY_UP
from keel.core.saturation import SaturationSampler, sampling
from keel.core.settings import Settings
from keel.tickets.spec import SPEC as TICKETS
from tests.support.eventually import eventually
from tests.support.serving import serving_app


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return samples(response.text)


async def test_in_flight_counts_a_request_while_it_is_handled_and_not_after() -> None:
    release = asyncio.Event()
    router = APIRouter()

    @router.get("/slow")
    async def slow() -> dict[str, str]:
        await release.wait()
        return {"status": "done"}

    app = create_app(title="slow", settings=Settings(_env_file=None), routers=[router])
    app.state.saturation = SaturationSampler("slowsvc", app.state.http_metrics.in_flight)
    gauge = ("http_requests_in_flight", (("service", "slowsvc"),))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://keel") as client:
        assert (await scrape(client))[gauge] == 0  # the scrape itself is left out
        pending = [asyncio.create_task(client.get("/slow")) for _ in range(3)]
        await eventually(lambda: scrape(client), until=lambda m: m[gauge] == 3, what="3 in flight")
        release.set()
        assert all(r.status_code == 200 for r in await asyncio.gather(*pending))
        assert (await scrape(client))[gauge] == 0


async def test_pool_figures_follow_a_held_database_connection_and_redis_is_reported(
    make_settings: Callable[..., Settings], pg_dsn: str, redis_url: str
) -> None:
    settings = make_settings(postgres_dsn=pg_dsn, redis_url=redis_url, db_pool_size=3)
    DEPENDENCY_UP.clear()
    async with serving_app([TICKETS], settings, run_workers=False) as (app, client):
        # After the start's dependency probe (keel.core.health.probing), which borrows a connection.
        before = await eventually(
            lambda: scrape(client),
            until=lambda m: ("dependency_up", (("dependency", "postgres"),)) in m,
            what="the start's dependency probe done",
        )
        assert before[("db_pool_size", ())] == 3
        idle = ("db_pool_connections", (("state", "idle"),))
        assert before[idle] + before[("db_pool_connections", (("state", "in_use"),))] <= 3
        assert before[("db_pool_waiting", ())] == 0
        assert before[("redis_pool_max_connections", ())] > 0
        assert ("redis_pool_connections", (("state", "in_use"),)) in before
        in_use = ("db_pool_connections", (("state", "in_use"),))
        held = before[in_use]
        db = app.state.infra.db
        async with db.connection(), db.connection():
            assert (await scrape(client))[in_use] == held + 2
            async with db.connection():  # the pool's last connection: the next caller waits
                waiter = asyncio.create_task(db.ping())
                await eventually(
                    lambda: scrape(client),
                    until=lambda m: m[("db_pool_waiting", ())] == 1,
                    what="a caller waiting for a connection",
                )
        await waiter
        after = await scrape(client)
        assert after[in_use] == held and after[("db_pool_waiting", ())] == 0
        assert after[idle] + after[in_use] == 3  # all three were opened; those not in use are idle


async def test_event_loop_lag_records_a_call_that_blocks_the_loop() -> None:
    app = create_app(title="lag", settings=Settings(_env_file=None))
    sampler = SaturationSampler("lagsvc", app.state.http_metrics.in_flight, tick_s=0.05)
    app.state.saturation = sampler
    async with (
        sampling(sampler),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://keel") as client,
    ):
        count = ("event_loop_lag_seconds_count", ())
        fast = ("event_loop_lag_seconds_bucket", (("le", "0.1"),))

        def slow_ticks(m: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
            return m.get(count, 0.0) - m.get(fast, 0.0)

        first = await eventually(lambda: scrape(client), until=lambda m: count in m, what="a first tick")
        # A tick of this sampler's own (the histogram is the process's: other apps may have ticked it),
        # so its next sleep is under way when the loop blocks.
        before = await eventually(
            lambda: scrape(client), until=lambda m: m[count] > first[count], what="this sampler ticking"
        )
        _hold_the_loop(0.3)
        late = await eventually(
            lambda: scrape(client),
            until=lambda m: slow_ticks(m) > slow_ticks(before),
            what="the blocked tick, late by more than 0.1 s",
        )
        # The last tick's lateness as a gauge too, for a panel that shows it as it is now.
        assert late[("event_loop_lag_last_seconds", ())] >= 0.1


def _hold_the_loop(seconds: float) -> None:
    """A CPU-bound call that keeps the event loop from running anything for `seconds`: the fault the
    lag histogram exists to show (the test's waits are the `eventually` around it)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
