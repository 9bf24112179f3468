"""What the demo writes to the broker as an outside producer would: a confirmed route, a few orders."""

from __future__ import annotations

import random
from typing import Any

import httpx
import orjson

from keel.cityguide import topics
from keel.core.bus.message import OutgoingMessage
from keel.core.events import Event, encode
from keel.demo.steps import DemoFailure, FlowSkipped
from keel.orders.fake import fake_order
from keel.orders.schemas import ORDER_EVENT

ORDERS_TOPIC = "orders"
POINTS = ({"name": "Кремль"}, {"name": "Улица Баумана"}, {"name": "Озеро Кабан"})


def route_confirmed(route_id: str) -> OutgoingMessage:
    payload: dict[str, Any] = {"route_id": route_id, "mode": "walk", "city": "Казань", "points": list(POINTS)}
    return encode(Event(topics.ROUTE_CONFIRMED, payload, key=route_id), topics.ROUTE_CONFIRMED, "bare")


def orders(count: int, rng: random.Random) -> tuple[list[str], list[OutgoingMessage]]:
    """`count` random orders in the seed's model (key = order_uid), wire "bare" as `keel orders produce`."""
    uids, messages = [], []
    for _ in range(count):
        order = fake_order(rng)
        uids.append(str(order["order_uid"]))
        messages.append(encode(Event(ORDER_EVENT, order, key=order["order_uid"]), ORDERS_TOPIC, "bare"))
    return uids, messages


async def send_via_platform(
    client: httpx.AsyncClient, base_url: str, messages: list[OutgoingMessage]
) -> None:
    """Under `keel up` (in-memory bus) the embedded platform's dev door publishes for us."""
    for m in messages:
        response = await client.post(
            f"{base_url.rstrip('/')}/_dev/bus/{m.topic}",
            content=m.value or b"",
            params={"key": m.key.decode()} if m.key else None,
            headers={"X-Bus-Headers": orjson.dumps({k: v.decode() for k, v in m.headers}).decode()},
        )
        if response.status_code == 404:
            # A `keel serve` process (or anything not `keel up`): no door, as in production.
            raise FlowSkipped(
                f"{base_url} has no dev bus door (it is not `keel up`): name the broker with --brokers"
            )
        if response.status_code == 403:
            raise FlowSkipped(
                f"{base_url} keeps its dev bus door shut (not bound to loopback): --brokers, or KEEL_DEV_DOOR=1 there"
            )
        if response.status_code != 202:
            raise DemoFailure(f"dev bus refused {m.topic}: HTTP {response.status_code} {response.text[:200]}")


async def send(brokers: list[str], messages: list[OutgoingMessage]) -> None:
    from keel.core.bus.kafka import KafkaBus
    from keel.core.settings import Settings

    # The platform's own KAFKA_SECURITY_* settings reach a secured cluster from the demo too.
    bus = KafkaBus(brokers, idempotence=False, security=Settings().kafka_security())
    try:
        await bus.ensure_topics(sorted({m.topic for m in messages}))
        producer = bus.producer()
        await producer.start()
        try:
            await producer.send_many(messages)
        finally:
            await producer.stop()
    finally:
        await bus.close()
