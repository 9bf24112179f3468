"""Invalid messages go to `<topic>.dlq` with the reason in headers; the consumer goes on."""

from __future__ import annotations

import orjson

from keel.core.bus import OutgoingMessage
from keel.orders.fake import BAD_KINDS, bad_message, fake_order
from tests.integration.orders.conftest import send, served, serving
from tests.support.topic_log import KafkaTopicLog


async def test_ten_malformed_messages_land_in_the_dlq_and_the_valid_ones_around_them_are_served(
    order_settings, producer, rng, kafka_brokers
):
    settings = order_settings()
    bad = [bad_message(rng, BAD_KINDS[n % len(BAD_KINDS)]) for n in range(10)]
    good = [fake_order(rng) for _ in range(30)]
    stream: list[bytes | dict] = []
    for n, order in enumerate(good):
        stream.append(order)
        if n % 3 == 1:
            stream.append(bad[n // 3].value)
    records = [
        OutgoingMessage(
            topic=settings.kafka_topic,
            value=v if isinstance(v, bytes) else orjson.dumps(v),
            key=b"one-partition",
        )
        for v in stream
    ]
    async with serving(settings) as (_, client):
        await producer.send_many(records)  # one key: bad and good interleaved in one partition
        # One partition, in order: once the last order is served, everything before it was handled.
        await served(client, good[-1]["order_uid"])
        responses = [await client.get(f"/order/{o['order_uid']}") for o in good]
        log = await KafkaTopicLog(kafka_brokers, settings.dlq_topic).open()
        try:
            dead = await log.read(10, within_s=30)
            assert await log.size() == 10  # exactly the ten, no valid order among them
        finally:
            await log.close()

    assert [orjson.loads(r.content) for r in responses] == good
    assert sorted(m.value for m in dead) == sorted(b.value for b in bad)  # untouched originals
    for message in dead:
        assert message.header("dlq-original-topic") == settings.kafka_topic.encode()
        assert message.header("dlq-consumer-group") == settings.kafka_group_id.encode()
        assert message.header("dlq-error-type") == b"PoisonMessage"
        assert message.header("dlq-attempts") == b"1"  # poison: no retries wasted on it
        assert int(message.header("dlq-original-offset")) >= 0
    reasons = [m.header("dlq-error").decode() for m in dead]
    assert any(r.startswith("not valid JSON") for r in reasons)
    assert any(r.startswith("expected a JSON object") for r in reasons)
    assert any(r.startswith("invalid order:") for r in reasons)


async def test_the_dlq_reason_names_the_offending_field(order_settings, producer, rng, kafka_brokers):
    settings = order_settings()
    order = fake_order(rng)
    order["sm_id"] = "99"
    order["payment"]["amount"] = -5
    async with serving(settings):
        await send(producer, settings.kafka_topic, [order])
        log = await KafkaTopicLog(kafka_brokers, settings.dlq_topic).open()
        try:
            [dead] = await log.read(1, within_s=30)
        finally:
            await log.close()

    reason = dead.header("dlq-error").decode()
    assert "sm_id: Input should be a valid integer" in reason
    assert "payment.amount: Input should be greater than or equal to 0" in reason
