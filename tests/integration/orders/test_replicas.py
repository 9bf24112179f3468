"""Two replicas of the order service in one consumer group: an order updated on the topic is served
fresh by both within a second, not only by the replica that owns its partition (the other learns of
the write from the notification its transaction sent, keel.orders.invalidation). A replica that lost
its notification feed serves from the database until it listens again."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import asyncpg
import httpx
import orjson

from keel.core.db import Database
from keel.orders.cache import OrderCache
from keel.orders.fake import fake_order
from keel.orders.invalidation import CacheInvalidation
from tests.integration.orders.conftest import send, served, served_as, serving
from tests.support.eventually import eventually
from tests.support.tcp_proxy import TcpProxy

BOUND_S = 1.0


def updated(order: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A valid update of `order`: other details and items, the same track number throughout."""
    newer: dict[str, Any] = fake_order(rng, order_uid=order["order_uid"], items=1)
    newer["track_number"] = newer["items"][0]["track_number"] = order["track_number"]
    return newer


async def test_an_update_reaches_every_replica_within_a_second(
    order_settings: Any, producer: Any, rng: random.Random
) -> None:
    settings = order_settings()
    orders = [fake_order(rng) for _ in range(12)]  # keys on every partition: each replica owns some
    async with serving(settings) as (_, a), serving(settings) as (_, b):
        await send(producer, settings.kafka_topic, orders)
        for order in orders:
            for client in (a, b):
                # Cached on both replicas (the owner from its ingest, the other by read-through; a
                # read-through is not kept while a write it might predate lands, so ask again).
                await eventually(
                    lambda c=client, o=order: c.get(f"/order/{o['order_uid']}"),
                    until=lambda r, o=order: (
                        r.headers.get("X-Source") == "cache" and orjson.loads(r.content) == o
                    ),
                    timeout_s=10,
                    what="cached on both replicas",
                )

        news = [updated(o, rng) for o in orders]
        sent = time.monotonic()
        await send(producer, settings.kafka_topic, news)
        lags: list[float] = []
        for new in news:
            for client in (a, b):
                await served_as(client, new, timeout_s=10)
            lags.append(time.monotonic() - sent)

    print(
        f"\n12 orders updated on the topic: both replicas served every new version {max(lags):.2f} s after the send"
    )
    assert max(lags) <= BOUND_S + 0.5  # the consumer's own fetch and commit plus the bound


async def test_a_replica_that_lost_its_notification_feed_reads_the_database_until_it_listens_again(
    order_settings: Any, producer: Any, rng: random.Random, fresh_pg_dsn: str
) -> None:
    settings = order_settings()
    order = fake_order(rng)
    async with serving(settings) as (_, client):
        await send(producer, settings.kafka_topic, [order])
        await served(client, order["order_uid"])
        assert (await client.get(f"/order/{order['order_uid']}")).headers["X-Source"] == "cache"
        admin = await asyncpg.connect(fresh_pg_dsn)
        try:
            # Cut the LISTEN connection as a failover or a network blip would.
            cut = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%' AND datname = current_database()"
            )
            assert cut == 1

            async def answer() -> httpx.Response:
                response = await client.get(f"/order/{order['order_uid']}")
                assert orjson.loads(response.content) == order  # never a wrong order, whatever the source
                return response

            def source(r: httpx.Response) -> str:
                return r.headers["X-Source"]

            await eventually(
                answer, until=lambda r: source(r) == "db", timeout_s=1, what="reads from the database"
            )
            # Listening again (the worker reconnects within a second), it serves from memory again.
            await eventually(
                answer, until=lambda r: source(r) == "cache", timeout_s=5, what="the cache back on"
            )
        finally:
            await admin.close()


async def test_a_notification_feed_gone_silent_turns_the_cache_off_within_its_heartbeat_and_on_again(
    fresh_pg_dsn: str,
) -> None:
    """A LISTEN connection whose server stops answering without a reset (its machine lost, a network
    partition) is never reported lost: the feed asks it a query every heartbeat and turns the cache
    off when none comes back, rather than serve orders whose updates it no longer hears of."""
    proxy = await TcpProxy.in_front_of(fresh_pg_dsn).start()
    db = Database.connect(fresh_pg_dsn, listen_dsn=proxy.reroute(fresh_pg_dsn), pool_size=2)
    cache = OrderCache(100)
    feed = CacheInvalidation(db, cache, sender="replica-a", retry_s=0.1, heartbeat_s=0.3)
    await feed.open()
    running = asyncio.create_task(feed.run())
    try:
        assert cache.live
        proxy.set_mode("blackhole")  # the LISTEN connection stays open and nothing comes back
        await eventually(lambda: cache.live, until=lambda live: not live, timeout_s=3, what="the cache off")
        proxy.set_mode("pass")
        await eventually(lambda: cache.live, until=bool, timeout_s=10, what="the cache on again")
    finally:
        await feed.stop()
        await asyncio.wait_for(running, 10)
        await db.dispose()
        await proxy.close()
