"""A door into the in-memory bus for the embedded platform (`keel up` only): what a console
producer is to Kafka. Outside tools (the demo, a developer with curl) publish a record to a topic the
platform knows; the services consume it exactly as they would from a broker. It does not exist in
`keel serve` / `keel worker`, where the broker itself is the door.

It takes any bytes for any known topic from anyone who can reach it, so it opens only when `keel up`
binds a loopback address; on any other address it answers 403 unless KEEL_DEV_DOOR=1 opens it (with a
warning at start)."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from keel.core.addresses import is_loopback
from keel.core.app import error_responses
from keel.core.bus.message import OutgoingMessage
from keel.core.bus.port import Producer
from keel.core.errors import Forbidden, NotFound, Unprocessable

log = logging.getLogger("keel.devbus")

PREFIX = "/_dev/bus"


def dev_door_opens(host: str, forced: bool) -> bool:
    """The door opens on a loopback bind, or anywhere when KEEL_DEV_DOOR forces it (warned about)."""
    if is_loopback(host):
        return True
    if forced:
        log.warning(
            "KEEL_DEV_DOOR=1: %s%s publishes any bytes to any topic for anyone who can reach %s",
            PREFIX,
            "/{topic}",
            host,
        )
    return forced


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


def dev_bus_router(topics: Collection[str], *, door_open: bool = True) -> APIRouter:
    """`door_open=False`: the route answers 403 saying how to open it (see the module docstring)."""
    known = frozenset(topics)
    router = APIRouter(prefix=PREFIX, tags=["dev"])

    @router.post(
        "/{topic}",
        status_code=202,
        summary="Publish one record onto the in-memory bus (embedded platform only)",
        responses=error_responses(403, 404, 413, 422),
    )
    async def publish(
        topic: str,
        request: Request,
        key: Annotated[str | None, Query(max_length=256)] = None,
        bus_headers: Annotated[str | None, Header(alias="X-Bus-Headers")] = None,
    ) -> Response:
        if not door_open:
            raise Forbidden(
                "the dev bus door opens only when `keel up` binds a loopback address; "
                "KEEL_DEV_DOOR=1 opens it on others"
            )
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
