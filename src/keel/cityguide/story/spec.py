"""How the platform wires the story worker: one consumer and a producer, no routes, no database."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from keel.cityguide import topics
from keel.cityguide.publisher import Publisher
from keel.cityguide.story.service import StoryWorker
from keel.core.consumer import ConsumerRunner, Idempotent, RetryPolicy
from keel.core.infra import Infra
from keel.core.service import ServiceSpec, Wiring

GROUP = "story"


def routers() -> Sequence[APIRouter]:
    return []


async def wire(infra: Infra) -> Wiring:
    producer = infra.bus.producer()
    await producer.start()
    worker = StoryWorker(Publisher(producer))
    runner = ConsumerRunner(
        infra.bus,
        group_id=GROUP,
        topics=[topics.STORY_GENERATE],
        wire="bare",
        handler=Idempotent(worker.on_generate),
        dlq_topic=topics.DLQ,
        default_event_type=topics.STORY_GENERATE,
        retry=RetryPolicy.from_settings(infra.settings),
    )
    return Wiring(workers=[runner], closers=[producer.stop])


SPEC = ServiceSpec(
    name="story",
    title="Cityguide story worker",
    routers=routers,
    wire=wire,
    topics=(topics.STORY_GENERATE, topics.STORY_GENERATED, topics.DLQ),
    uses_database=False,
    description="Turns `story.generate` into `story.generate.completed` with 3-5 Russian stories built "
    "deterministically from the route's data.",
)
