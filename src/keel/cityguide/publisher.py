"""Direct publishing for the stateless workers (story, tts): they own no database, so no outbox.

A worker publishes its results before its consumer commits the requests' offsets: a crash in between
redelivers the requests and the results are published again, which the orchestrator ignores by state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keel.cityguide import topics
from keel.core.bus.message import Headers
from keel.core.bus.port import Producer
from keel.core.events import Event, encode
from keel.core.telemetry import trace_headers

Result = tuple[str, dict[str, Any]]  # (key, payload)


class Publisher:
    def __init__(self, producer: Producer) -> None:
        self._producer = producer

    async def publish(self, topic: str, results: Sequence[Result], causes: Sequence[Headers]) -> None:
        """Every result in flight at once, one wait for all the acks (not one round trip each).
        `causes`: the headers of the request each result answers, whose trace the result carries on."""
        if results:
            await self._producer.send_many(
                [
                    encode(Event(topic, payload, key=key, headers=trace_headers(cause)), topic, topics.WIRE)
                    for (key, payload), cause in zip(results, causes, strict=True)
                ]
            )
