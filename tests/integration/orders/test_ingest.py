"""Kafka → validation → PostgreSQL → cache → GET /order/{id}, against the real broker and database."""

from __future__ import annotations

import orjson

from keel.core.bus import OutgoingMessage
from keel.orders.fake import fake_order
from tests.integration.orders.conftest import inbox_rows, row_counts, send, served, served_as, serving
from tests.support.eventually import eventually


async def test_produced_order_is_served_identical_from_cache_then_from_db(order_settings, producer, rng):
    settings = order_settings()
    order = fake_order(rng)
    async with serving(settings) as (_, client):
        await send(producer, settings.kafka_topic, [order])
        # The first 200 may come from the database: the cache learns an order just after its commit.
        cached = await eventually(
            lambda: client.get(f"/order/{order['order_uid']}"),
            until=lambda r: r.status_code == 200 and r.headers["X-Source"] == "cache",
            timeout_s=30,
            what="the order served from the cache",
        )
        from_db = await client.get(f"/order/{order['order_uid']}", params={"nocache": "1"})

    assert cached.headers["X-Source"] == "cache"
    assert from_db.status_code == 200 and from_db.headers["X-Source"] == "db"
    for response in (cached, from_db):
        assert response.headers["content-type"] == "application/json"
        assert float(response.headers["X-Duration-ms"]) >= 0
        body = orjson.loads(response.content)
        assert body == order
        assert list(body) == list(order)  # the model's field order, nested ones too
        assert list(body["payment"]) == list(order["payment"])
        assert list(body["items"][0]) == list(order["items"][0])
    assert cached.content == from_db.content


async def test_the_same_order_sent_twice_leaves_one_set_of_rows(order_settings, producer, rng, fresh_pg_dsn):
    settings = order_settings()
    order, marker = fake_order(rng, items=3), fake_order(rng)
    # Byte-for-byte, then with its keys in another order and other spacing: the same order each time.
    shuffled = orjson.dumps(dict(reversed(list(order.items()))), option=orjson.OPT_INDENT_2)
    async with serving(settings) as (_, client):
        await send(producer, settings.kafka_topic, [order, order, shuffled, marker])
        await served(client, marker["order_uid"])  # same partition key order: the marker comes last
        await served(client, order["order_uid"])

    assert await row_counts(fresh_pg_dsn, order["order_uid"]) == {
        "orders": 1,
        "deliveries": 1,
        "payments": 1,
        "items": 3,
    }
    # The inbox knows a message by its content: the three copies are one entry, the marker another.
    assert await inbox_rows(fresh_pg_dsn, settings.kafka_group_id) == 2


async def test_an_updated_order_replaces_its_items_and_details(order_settings, producer, rng, fresh_pg_dsn):
    settings = order_settings()
    first = fake_order(rng, items=3)
    update = fake_order(rng, order_uid=first["order_uid"], items=1)
    update["track_number"] = first["track_number"]
    update["items"][0]["track_number"] = first["track_number"]
    async with serving(settings) as (_, client):
        await send(producer, settings.kafka_topic, [first])
        await served(client, first["order_uid"])
        await send(producer, settings.kafka_topic, [update])
        cached = await served_as(client, update)
        from_db = await client.get(f"/order/{first['order_uid']}", params={"nocache": "1"})

    assert orjson.loads(cached.content) == update and cached.headers["X-Source"] == "cache"
    assert orjson.loads(from_db.content) == update
    assert await row_counts(fresh_pg_dsn, first["order_uid"]) == {
        "orders": 1,
        "deliveries": 1,
        "payments": 1,
        "items": 1,
    }


async def test_an_order_and_its_update_in_one_batch_end_as_the_update(
    order_settings, producer, rng, fresh_pg_dsn
):
    settings = order_settings()
    first = fake_order(rng, items=2)
    update = fake_order(rng, order_uid=first["order_uid"], items=4)
    # Both on the topic before the consumer starts: they arrive in one batch, one statement per table.
    await send(producer, settings.kafka_topic, [first, update])
    async with serving(settings) as (_, client):
        response = await served(client, first["order_uid"], nocache="1")

    assert orjson.loads(response.content) == update
    assert (await row_counts(fresh_pg_dsn, first["order_uid"]))["items"] == 4


async def test_a_stale_copy_of_an_older_version_does_not_roll_an_update_back(order_settings, producer, rng):
    settings = order_settings()
    first = fake_order(rng, items=2)
    update = fake_order(rng, order_uid=first["order_uid"], items=1)
    marker = fake_order(rng)
    async with serving(settings) as (_, client):
        await send(producer, settings.kafka_topic, [first])
        await served(client, first["order_uid"])
        await send(producer, settings.kafka_topic, [update])
        await served_as(client, update)
        # A producer retry of the first version, long after the update, then a marker on the same key.
        await producer.send_many(
            [
                OutgoingMessage(settings.kafka_topic, orjson.dumps(first), key=first["order_uid"].encode()),
                OutgoingMessage(settings.kafka_topic, orjson.dumps(marker), key=first["order_uid"].encode()),
            ]
        )
        await served(client, marker["order_uid"])
        response = await client.get(f"/order/{first['order_uid']}", params={"nocache": "1"})

    assert orjson.loads(response.content) == update
