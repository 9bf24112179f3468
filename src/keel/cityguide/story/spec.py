"""How the platform wires the story worker: one consumer and a producer, no routes, no database."""

from __future__ import annotations

from keel.cityguide import topics
from keel.cityguide.publisher import Publisher
from keel.cityguide.story.service import StoryWorker
from keel.cityguide.workers import command_worker, no_routes, started_producer
from keel.core.infra import Infra
from keel.core.service import ServiceSpec, Wiring

GROUP = "story"
BATCH_SIZE = 200  # routes per batch: their stories are published together


async def wire(infra: Infra) -> Wiring:
    producer = await started_producer(infra)
    worker = StoryWorker(Publisher(producer))
    return command_worker(
        infra,
        producer,
        group=GROUP,
        topic=topics.STORY_GENERATE,
        handle=worker.on_generate,
        batch_size=BATCH_SIZE,
    )


SPEC = ServiceSpec(
    name="story",
    title="Cityguide story worker",
    routers=no_routes,
    wire=wire,
    topics=(topics.STORY_GENERATE, topics.STORY_GENERATED, topics.DLQ),
    uses_database=False,
    description="Turns `story.generate` into `story.generate.completed` with 3-5 Russian stories built "
    "deterministically from the route's data.",
)
