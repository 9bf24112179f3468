"""An order from `keel orders produce` (its own process, exporting over OTLP) → the orders consumer →
its rows is one trace: the tool's root span, a send span per order, the consumer's span under it."""

from __future__ import annotations

import random

from keel.orders.fake import fake_order
from tests.integration.orders.conftest import served, serving
from tests.integration.orders.test_produce_cli import keel
from tests.support.eventually import eventually
from tests.support.otlp import assert_parent, traced

SEED = 18


async def test_a_produced_order_is_one_trace_down_to_its_rows(
    order_settings, kafka_brokers, otlp, quick_span_export
):
    settings = traced(order_settings(), otlp)
    order_uid = fake_order(random.Random(SEED))["order_uid"]  # the tool's first order for this seed
    async with serving(settings) as (_, client):
        code, output = await keel(
            "orders",
            "produce",
            *("-n", "1", "--interval", "0", "--seed", str(SEED), "--topic", settings.kafka_topic),
            env={
                "KAFKA_BROKERS": ",".join(kafka_brokers),
                "KAFKA_IDEMPOTENCE": "false",
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            },
        )
        assert code == 0, output
        await served(client, order_uid)
        root = next(s for s in otlp.named("orders produce") if s.service == "keel-orders-produce")
        spans = await eventually(
            lambda: otlp.trace(root.trace_id),
            until=lambda got: any(s.name == f"process {settings.kafka_topic}" for s in got),
            timeout_s=30,
            what="the consumer's span exported",
        )
    assert root.parent_id is None
    assert_parent(spans, f"send {settings.kafka_topic}", "orders produce")
    assert_parent(spans, f"process {settings.kafka_topic}", f"send {settings.kafka_topic}")
    process = next(s for s in spans if s.name == f"process {settings.kafka_topic}")
    assert process.attributes["messaging.consumer.group.name"] == settings.kafka_group_id
