"""The order cache: served first, warm after a restart, bounded to the most recent orders, and off
with CACHE_ENABLED=0; misses and unknown orders answer from the database."""

from __future__ import annotations

import orjson
from prometheus_client import REGISTRY

from keel.core.db import Database
from keel.orders.cache import OrderCache
from keel.orders.fake import fake_order
from keel.orders.schemas import parse_order
from keel.orders.service import OrderService
from tests.integration.orders.conftest import send, served, serving
from tests.support.eventually import eventually


def cache_count(result: str) -> float:
    return REGISTRY.get_sample_value("cache_requests_total", {"cache": "orders", "result": result}) or 0.0


async def test_a_restarted_service_serves_orders_consumed_before_from_its_warm_cache(
    order_settings, producer, rng, topic
):
    settings = order_settings()
    orders = [fake_order(rng) for _ in range(5)]
    async with serving(settings) as (_, client):
        await send(producer, settings.kafka_topic, orders)
        for order in orders:
            await served(client, order["order_uid"])

    # A new instance on the same database, consuming a topic with nothing on it: only the warm-up
    # can have put these orders in its cache.
    restarted = order_settings(kafka_topic=topic("orders-empty"))
    async with serving(restarted) as (_, client):
        responses = [await client.get(f"/order/{o['order_uid']}") for o in orders]

    assert [r.headers["X-Source"] for r in responses] == ["cache"] * 5
    assert [orjson.loads(r.content) for r in responses] == orders


async def test_with_cache_enabled_0_every_answer_comes_from_the_database(order_settings, producer, rng):
    settings = order_settings(cache_enabled="0")
    order = fake_order(rng)
    async with serving(settings) as (_, client):
        await send(producer, settings.kafka_topic, [order])
        first = await served(client, order["order_uid"])
        again = await client.get(f"/order/{order['order_uid']}")

    assert settings.cache_enabled is False
    assert (first.headers["X-Source"], again.headers["X-Source"]) == ("db", "db")
    assert orjson.loads(again.content) == order


async def test_an_unknown_order_is_404_in_the_error_envelope(order_settings):
    async with serving(order_settings()) as (_, client):
        response = await client.get("/order/no-such-order")
        too_long = await client.get("/order/" + "x" * 500)

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found" and "no-such-order" in error["message"]
    assert error["request_id"] == response.headers["X-Request-Id"]
    assert response.headers["X-Source"] == "db" and float(response.headers["X-Duration-ms"]) >= 0
    assert too_long.status_code == 404


async def test_a_cache_miss_reads_the_database_once_then_hits(order_settings, rng, db: Database):
    order = fake_order(rng)
    writer = OrderService(db, cache=None)
    async with db.unit_of_work() as uow:
        await writer.save([parse_order(order)], uow)
        await uow.commit()
    service = OrderService(db, OrderCache(max_entries=10))
    hits, misses = cache_count("hit"), cache_count("miss")

    first = await service.get(order["order_uid"])
    second = await service.get(order["order_uid"])

    assert (first.source, second.source) == ("db", "cache")
    assert first.body == second.body and orjson.loads(first.body) == order
    assert (cache_count("hit") - hits, cache_count("miss") - misses) == (1, 1)


async def test_warm_up_loads_the_most_recently_written_orders_in_one_query(rng, db: Database):
    orders = [fake_order(rng) for _ in range(4)]
    writer = OrderService(db, cache=None)
    for order in orders:  # one transaction each: each has its own write time
        async with db.unit_of_work() as uow:
            await writer.save([parse_order(order)], uow)
            await uow.commit()
    cache = OrderCache(max_entries=10)

    loaded = await OrderService(db, cache).warm(2)

    assert loaded == 2 and len(cache) == 2
    assert [cache.get(o["order_uid"]) is not None for o in orders] == [False, False, True, True]


async def test_metrics_expose_the_order_cache_hit_ratio_consumption_and_dead_letters(
    order_settings, producer, rng
):
    settings = order_settings()
    order = fake_order(rng)
    async with serving(settings) as (_, client):
        await send(producer, settings.kafka_topic, [order, b"{not json"])
        await served(client, order["order_uid"])
        await client.get("/order/absent")
        await eventually(
            lambda: REGISTRY.get_sample_value(
                "dlq_messages_total", {"topic": settings.dlq_topic, "reason": "poison"}
            ),
            until=lambda v: v == 1,
            timeout_s=30,
            what="the malformed message dead-lettered",
        )
        group, topic = settings.kafka_group_id, settings.kafka_topic
        # The lag gauge appears after the consumer's first lag read of the broker.
        metrics = (
            await eventually(
                lambda: client.get("/metrics"),
                until=lambda r: f'kafka_consumer_lag{{group="{group}"' in r.text,
                timeout_s=30,
                what="the consumer lag gauge",
            )
        ).text

    assert f'events_consumed_total{{group="{group}",outcome="ok",topic="{topic}"}} 1.0' in metrics
    assert 'cache_requests_total{cache="orders",result="hit"}' in metrics
    assert 'cache_requests_total{cache="orders",result="miss"}' in metrics
    assert "order_cache_entries" in metrics
    assert f'kafka_consumer_lag{{group="{group}"' in metrics
    assert (
        REGISTRY.get_sample_value("dlq_messages_total", {"topic": settings.dlq_topic, "reason": "poison"})
        == 1
    )
