"""The cityguide flow is one trace over OTLP: route.confirmed → story.generate → story.generate.completed
→ tts.requested → tts.completed → delivery.prefetch, through the orchestrator's outbox, the story and
TTS workers and the delivery-prefetch consumer, and on to the delivery page the caller asks for."""

from __future__ import annotations

import uuid

from keel.cityguide import topics
from keel.cityguide.delivery.spec import SPEC as DELIVERY
from keel.cityguide.orchestrator.spec import SPEC as ORCHESTRATOR
from keel.cityguide.story.generator import MIN_STORIES
from keel.cityguide.story.spec import SPEC as STORY
from keel.cityguide.tts.spec import SPEC as TTS
from keel.core.bus.kafka import KafkaBus
from keel.core.events import Event, encode
from keel.core.settings import Settings
from tests.support.eventually import eventually
from tests.support.otlp import assert_connected, assert_parent, traced, traceparent
from tests.support.servers import idempotent_producers
from tests.support.serving import serving_app

POINTS = [{"name": "Кремль"}, {"name": "Озеро Кабан"}]
# A route gets a story per point and at least MIN_STORIES: two points make three audios.
STORIES = max(len(POINTS), MIN_STORIES)
HOPS = [
    ("process route.confirmed", "send route.confirmed"),
    ("send story.generate", "process route.confirmed"),
    ("process story.generate", "send story.generate"),
    ("send story.generate.completed", "process story.generate"),
    ("process story.generate.completed", "send story.generate.completed"),
    ("send tts.requested", "process story.generate.completed"),
    ("process tts.requested", "send tts.requested"),
    ("send tts.completed", "process tts.requested"),
    ("process tts.completed", "send tts.completed"),
    ("send delivery.prefetch", "process tts.completed"),
]


async def test_the_cityguide_flow_is_one_trace_to_the_delivery_page(
    fresh_pg_dsn, redis_url, kafka_brokers, tmp_path, app_database, otlp, quick_span_export
):
    settings = traced(
        Settings.model_validate(
            {
                "data_dir": tmp_path,
                # A database of its own: the shared one holds other tests' unpublished outbox rows
                # (the fuzz suite leaves thousands), which this app's relay would send first.
                **app_database(fresh_pg_dsn),
                "redis_url": redis_url,
                "kafka_brokers": kafka_brokers,
                "kafka_idempotence": idempotent_producers(),
                "secret": "tracing-secret",
            }
        ),
        otlp,
    )
    route_id = f"route-{uuid.uuid4().hex[:8]}"
    trace_id = uuid.uuid4().hex
    caller = (("traceparent", traceparent(trace_id).encode()),)
    payload = {"route_id": route_id, "mode": "walk", "city": "Казань", "points": POINTS}
    async with serving_app(
        [ORCHESTRATOR, DELIVERY, STORY, TTS], settings, headers={"X-User-Id": "tracing-reader"}
    ) as (_, client):
        bus = KafkaBus(kafka_brokers, idempotence=idempotent_producers())
        producer = bus.producer()
        await producer.start()
        try:
            event = Event(topics.ROUTE_CONFIRMED, payload, key=route_id, headers=caller)
            await producer.send_many([encode(event, topics.ROUTE_CONFIRMED, "bare")])
        finally:
            await producer.stop()
            await bus.close()
        page = await eventually(
            lambda: client.get(
                "/delivery/prefetch",
                params={"route_id": route_id, "next": 10},
                headers={"traceparent": traceparent(trace_id)},
            ),
            until=lambda r: r.status_code == 200 and len(r.json()["items"]) == STORIES,
            timeout_s=120,
            what="every audio of the route on the delivery page",
        )
        assert page.status_code == 200
        spans = await eventually(
            lambda: otlp.trace(trace_id),
            until=lambda got: {"send delivery.prefetch", "GET /delivery/prefetch"} <= {s.name for s in got},
            timeout_s=30,
            what="the flow's spans exported",
        )
    for child, parent in HOPS:
        assert_parent(spans, child, parent)
    assert_connected(spans, "ab" * 8)
    groups = {
        s.attributes.get("messaging.consumer.group.name") for s in spans if s.name == "process tts.completed"
    }
    assert groups == {"orchestrator.tts.completed", "delivery-prefetch"}  # both consumers, one trace
    assert [s.name for s in spans if s.kind == "SERVER"][-1] == "GET /delivery/prefetch"
