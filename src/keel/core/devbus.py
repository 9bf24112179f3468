"""A door into the in-memory bus for the embedded platform (`keel up` only): what a console
producer is to Kafka. Outside tools (the demo, a developer with curl) publish a record to a topic the
platform knows; the services consume it exactly as they would from a broker. It does not exist in
`keel serve` / `keel worker`, where the broker itself is the door."""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from keel.core.app import error_responses
from keel.core.bus.message import OutgoingMessage
from keel.core.bus.port import Producer
from keel.core.errors import NotFound, Unprocessable

PREFIX = "/_dev/bus"


def _headers(raw: str | None) -> tuple[tuple[str, bytes], ...]:
    if not raw:
        return ()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Unprocessable("X-Bus-Headers must be a JSON object of header name to text") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise Unprocessable("X-Bus-Headers must be a JSON object of header name to text")
    return tuple((str(k), v.encode()) for k, v in data.items())


def dev_bus_router(topics: Collection[str]) -> APIRouter:
    known = frozenset(topics)
    router = APIRouter(prefix=PREFIX, tags=["dev"])

    @router.post(
        "/{topic}",
        status_code=202,
        summary="Publish one record onto the in-memory bus (embedded platform only)",
        responses=error_responses(404, 413, 422),
    )
    async def publish(
        topic: str,
        request: Request,
        key: Annotated[str | None, Query(max_length=256)] = None,
        bus_headers: Annotated[str | None, Header(alias="X-Bus-Headers")] = None,
    ) -> Response:
        if topic not in known:
            raise NotFound(f"unknown topic {topic!r}; known: {', '.join(sorted(known))}")
        producer: Producer = request.app.state.dev_producer
        value = await request.body()
        await producer.send(
            OutgoingMessage(topic, value, key.encode() if key else None, _headers(bus_headers))
        )
        return Response(
            orjson.dumps({"topic": topic, "bytes": len(value)}),
            status_code=202,
            media_type="application/json",
        )

    return router
