"""The order service running for real: its app and lifespan (consumer, cache warm-up) on a fresh
database and the session's Kafka-protocol broker, a producer that sends like an outside system
(bare JSON, no event headers), and row counts straight from PostgreSQL."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import pytest_asyncio
from fastapi import FastAPI

from keel.core import infra as infra_module
from keel.core.bus import Bus, OutgoingMessage, Producer
from keel.core.bus.factory import build_bus as real_build_bus
from keel.core.bus.kafka import KafkaBus
from keel.core.settings import Settings
from keel.orders.settings import OrderSettings
from keel.orders.spec import SPEC
from tests.support.bus import kafka_producer
from tests.support.eventually import eventually
from tests.support.servers import idempotent_producers
from tests.support.serving import serving_app

MakeSettings = Callable[..., OrderSettings]


@pytest.fixture(autouse=True)
def quick_group_joins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app builds its bus from settings; here it gets the real Kafka adapter with the short
    session timeouts the test broker needs for quick group joins (the production defaults take
    seconds per join and rebalance)."""

    def build(settings: Settings) -> Bus:
        if not settings.kafka_brokers:
            return real_build_bus(settings)
        return KafkaBus(
            settings.kafka_brokers,
            idempotence=idempotent_producers(),
            partitions=settings.kafka_partitions,
            session_timeout_ms=3000,
            heartbeat_interval_ms=300,
        )

    monkeypatch.setattr(infra_module, "build_bus", build)


@pytest.fixture
def order_settings(
    fresh_pg_dsn: str,
    kafka_brokers: list[str],
    topic,
    tmp_path: Path,
    app_database: Callable[[str], dict[str, Any]],
) -> MakeSettings:
    """OrderSettings on this test's database, topic (`orders-<id>`, DLQ `orders-<id>.dlq`) and group."""
    group = f"order-svc-{uuid.uuid4().hex[:8]}"

    def build(**overrides: Any) -> OrderSettings:
        values: dict[str, Any] = {
            **app_database(fresh_pg_dsn),
            "kafka_brokers": kafka_brokers,
            "kafka_idempotence": idempotent_producers(),
            "kafka_topic": topic("orders"),
            "kafka_group_id": group,
            "data_dir": tmp_path / "keel",
            "consumer_max_attempts": 2,
            "consumer_backoff_base_s": 0.05,
            "consumer_backoff_max_s": 0.2,
            # These tests poll every few ms for orders not ingested yet: each poll a miss. The miss
            # budget per address has its own tests (tests/security/test_access_and_limits.py).
            "order_miss_limit": "",
        }
        values.update(overrides)
        return OrderSettings.model_validate(values)

    return build


def serving(settings: OrderSettings) -> AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]:
    """The order service (lifespan included: warm-up, consumer) and a client talking to it."""
    return serving_app([SPEC], settings)


@pytest_asyncio.fixture
async def producer(kafka_brokers: list[str]) -> AsyncIterator[Producer]:
    async with kafka_producer(kafka_brokers) as started:
        yield started


def raw(order: dict[str, Any]) -> bytes:
    return orjson.dumps(order)


async def send(producer: Producer, topic: str, values: Sequence[bytes | dict[str, Any]]) -> None:
    """Publish like an outside producer: the bare value, key = order_uid when there is one, no headers."""
    records = []
    for value in values:
        body = raw(value) if isinstance(value, dict) else value
        key = value["order_uid"].encode() if isinstance(value, dict) else None
        records.append(OutgoingMessage(topic=topic, value=body, key=key))
    await producer.send_many(records)


async def served(
    client: httpx.AsyncClient, order_uid: str, *, timeout_s: float = 30, **params: str
) -> httpx.Response:
    """GET /order/{id} once the consumer has stored it."""
    response: httpx.Response = await eventually(
        lambda: client.get(f"/order/{order_uid}", params=params),
        until=lambda r: r.status_code == 200,
        timeout_s=timeout_s,
        what=f"order {order_uid} served",
    )
    return response


async def served_as(
    client: httpx.AsyncClient, order: dict[str, Any], *, timeout_s: float = 30, **params: str
) -> httpx.Response:
    """GET /order/{id} once it answers exactly `order` (an update has landed)."""
    response: httpx.Response = await eventually(
        lambda: client.get(f"/order/{order['order_uid']}", params=params),
        until=lambda r: r.status_code == 200 and orjson.loads(r.content) == order,
        timeout_s=timeout_s,
        what=f"order {order['order_uid']} as sent",
    )
    return response


async def inbox_rows(dsn: str, consumer: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM processed_events WHERE consumer = $1", consumer
        )
    finally:
        await conn.close()
    return count


async def row_counts(dsn: str, order_uid: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            table: await conn.fetchval(f"SELECT count(*) FROM {table} WHERE order_uid = $1", order_uid)
            for table in ("orders", "deliveries", "payments", "items")
        }
    finally:
        await conn.close()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(uuid.uuid4().int)
