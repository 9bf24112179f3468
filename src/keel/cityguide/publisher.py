"""Direct publishing for the stateless workers (story, tts): they own no database, so no outbox.

A worker publishes its result before its consumer commits the request's offset: a crash in between
redelivers the request and the result is published again, which the orchestrator ignores by state."""

from __future__ import annotations

from typing import Any

from keel.cityguide import topics
from keel.core.bus.port import Producer
from keel.core.events import Event, encode


class Publisher:
    def __init__(self, producer: Producer) -> None:
        self._producer = producer

    async def publish(self, topic: str, key: str, payload: dict[str, Any]) -> None:
        await self._producer.send(encode(Event(topic, payload, key=key), topic, topics.WIRE))
