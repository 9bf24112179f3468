"""The HTTP limit: a raw ASGI app that answers every request with the same JSON bytes from memory.

Served by the same server and settings as the service (`python -m bench.bare_asgi PORT`: granian
embedded on uvloop, as `keel serve` runs it, keel.core.http_server), so the gap between it and an
endpoint is what our framework, middleware and handler code cost. BARE_BODY_FILE holds the bytes,
BARE_STATUS the status (201 for a create, 200 for a read). BARE_WORK_NS spins that long on each
request before answering: a known cost, for bench/served_cost.py."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

_BODY = Path(os.environ["BARE_BODY_FILE"]).read_bytes() if "BARE_BODY_FILE" in os.environ else b"{}"
_STATUS = int(os.environ.get("BARE_STATUS", "200"))
_WORK_NS = int(os.environ.get("BARE_WORK_NS", "0"))
_START = {
    "type": "http.response.start",
    "status": _STATUS,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())],
}
_BODY_MESSAGE = {"type": "http.response.body", "body": _BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"]
            await send({"type": f"{kind}.complete"})
            if kind == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    # Drain the request body, as a real endpoint must before answering.
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    if _WORK_NS:
        began = time.perf_counter_ns()
        while time.perf_counter_ns() - began < _WORK_NS:
            pass
    await send(_START)
    await send(_BODY_MESSAGE)


if __name__ == "__main__":
    from keel.core.http_server import serve
    from keel.core.settings import Settings

    serve(app, "127.0.0.1", int(sys.argv[1]), Settings())
