"""The story worker's one use case: story.generate → story.generate.completed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from keel.cityguide import topics
from keel.cityguide.events import text_field
from keel.cityguide.publisher import Publisher
from keel.cityguide.story.generator import compose
from keel.core.events import Event
from keel.core.metrics import JOB_DURATION


class StoryWorker:
    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def on_generate(self, events: Sequence[Event]) -> None:
        """The stories of every route in the batch, published together."""
        results = [self._stories(event.payload) for event in events]
        await self._publisher.publish(topics.STORY_GENERATED, results, [e.headers for e in events])

    @staticmethod
    def _stories(payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        started = time.perf_counter()
        route_id = text_field(payload, "route_id")
        lang = text_field({"lang": payload.get("lang", "ru")}, "lang", max_len=10)
        route = payload.get("route")
        stories = compose(route_id, route if isinstance(route, dict) else payload)
        JOB_DURATION.labels(task="story.compose", outcome="ok").observe(time.perf_counter() - started)
        return route_id, {"route_id": route_id, "lang": lang, "stories": stories}
