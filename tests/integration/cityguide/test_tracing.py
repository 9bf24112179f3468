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
from keel.core.bus.partitioner import partition_of
from keel.core.events import Event, encode
from keel.core.settings import Settings
from tests.support.eventually import eventually
from tests.support.otlp import ReceivedSpan, assert_connected, assert_parent, traced, traceparent
from tests.support.servers import idempotent_producers
from tests.support.serving import serving_app

POINTS = [{"name": "Кремль"}, {"name": "Озеро Кабан"}]
# A route gets a story per point and at least MIN_STORIES: two points make three audios.
STORIES = max(len(POINTS), MIN_STORIES)
# Spans each story of a route makes once, in the route's trace.
PER_STORY = ("send tts.requested", "send tts.completed")
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


def flow_settings(fresh_pg_dsn, redis_url, kafka_brokers, tmp_path, app_database, otlp) -> Settings:
    return traced(
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


async def confirm(kafka_brokers: list[str], routes: dict[str, str]) -> None:
    """route.confirmed for each route id, each carrying its own caller's trace, in one send."""
    bus = KafkaBus(kafka_brokers, idempotence=idempotent_producers())
    producer = bus.producer()
    await producer.start()
    try:
        events = [
            Event(
                topics.ROUTE_CONFIRMED,
                {"route_id": route_id, "mode": "walk", "city": "Казань", "points": POINTS},
                key=route_id,
                headers=(("traceparent", traceparent(trace_id).encode()),),
            )
            for route_id, trace_id in routes.items()
        ]
        await producer.send_many([encode(e, topics.ROUTE_CONFIRMED, "bare") for e in events])
    finally:
        await producer.stop()
        await bus.close()


def per_story(spans: list[ReceivedSpan]) -> dict[str, int]:
    return {name: sum(s.name == name for s in spans) for name in PER_STORY}


async def test_the_cityguide_flow_is_one_trace_to_the_delivery_page(
    fresh_pg_dsn, redis_url, kafka_brokers, tmp_path, app_database, otlp, quick_span_export
):
    settings = flow_settings(fresh_pg_dsn, redis_url, kafka_brokers, tmp_path, app_database, otlp)
    route_id = f"route-{uuid.uuid4().hex[:8]}"
    trace_id = uuid.uuid4().hex
    async with serving_app(
        [ORCHESTRATOR, DELIVERY, STORY, TTS], settings, headers={"X-User-Id": "tracing-reader"}
    ) as (_, client):
        await confirm(kafka_brokers, {route_id: trace_id})
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
            until=lambda got: (
                {"send delivery.prefetch", "GET /delivery/prefetch"} <= {s.name for s in got}
                and per_story(got) == dict.fromkeys(PER_STORY, STORIES)
            ),
            timeout_s=30,
            what="the flow's spans exported",
        )
    for child, parent in HOPS:
        assert_parent(spans, child, parent)
    assert_connected(spans, "ab" * 8)
    # One request and one result per story: each request's send reached a process span (as its
    # parent, or linked from a batch's), and each result was sent from one of those.
    processed = [s for s in spans if s.name == "process tts.requested"]
    reached = {s.parent_id for s in processed} | {span for s in processed for _, span in s.links}
    assert {s.span_id for s in spans if s.name == "send tts.requested"} <= reached
    assert {s.parent_id for s in spans if s.name == "send tts.completed"} <= {s.span_id for s in processed}
    groups = {
        s.attributes.get("messaging.consumer.group.name") for s in spans if s.name == "process tts.completed"
    }
    assert groups == {"orchestrator.tts.completed", "delivery-prefetch"}  # both consumers, one trace
    assert [s.name for s in spans if s.kind == "SERVER"][-1] == "GET /delivery/prefetch"


async def test_routes_confirmed_together_each_keep_their_own_trace(
    fresh_pg_dsn, redis_url, kafka_brokers, tmp_path, app_database, otlp, quick_span_export
):
    """Routes on one partition are handled by the orchestrator in one batch and one transaction: each
    route's commands still go out in its own caller's trace, not in the batch's first one."""
    settings = flow_settings(fresh_pg_dsn, redis_url, kafka_brokers, tmp_path, app_database, otlp)
    first = f"route-{uuid.uuid4().hex[:8]}"
    partition = partition_of(first.encode(), settings.kafka_partitions)
    second = next(
        r
        for r in (f"route-{uuid.uuid4().hex[:8]}" for _ in range(1000))
        if partition_of(r.encode(), settings.kafka_partitions) == partition
    )
    routes = {first: uuid.uuid4().hex, second: uuid.uuid4().hex}
    async with serving_app([ORCHESTRATOR, DELIVERY, STORY, TTS], settings):
        await confirm(kafka_brokers, routes)
        traces = {
            route: await eventually(
                lambda t=trace_id: otlp.trace(t),
                until=lambda got: (
                    "send delivery.prefetch" in {s.name for s in got}
                    and per_story(got) == dict.fromkeys(PER_STORY, STORIES)
                ),
                timeout_s=120,
                what=f"{route}'s flow exported",
            )
            for route, trace_id in routes.items()
        }
    # Both routes were handled in one batch: its span links both routes' sends.
    sends = {s.span_id for spans in traces.values() for s in spans if s.name == "send route.confirmed"}
    assert any(sends <= {span for _, span in s.links} for s in otlp.named("process route.confirmed"))
    for spans in traces.values():
        names = [s.name for s in spans]
        assert names.count("send story.generate") == names.count("send delivery.prefetch") == 1, names
        assert_connected(spans, "ab" * 8)
