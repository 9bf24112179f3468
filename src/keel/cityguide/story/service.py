"""The story worker's one use case: story.generate → story.generate.completed."""

from __future__ import annotations

import time

from keel.cityguide import topics
from keel.cityguide.events import text_field
from keel.cityguide.publisher import Publisher
from keel.cityguide.story.generator import compose
from keel.core.events import Event
from keel.core.metrics import JOB_DURATION


class StoryWorker:
    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def on_generate(self, event: Event) -> None:
        started = time.perf_counter()
        payload = event.payload
        route_id = text_field(payload, "route_id")
        lang = text_field({"lang": payload.get("lang", "ru")}, "lang", max_len=10)
        route = payload.get("route")
        stories = compose(route_id, route if isinstance(route, dict) else payload)
        result = {"route_id": route_id, "lang": lang, "stories": stories}
        await self._publisher.publish(topics.STORY_GENERATED, route_id, result)
        JOB_DURATION.labels(job="story.compose", outcome="ok").observe(time.perf_counter() - started)
