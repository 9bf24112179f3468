"""An app served by uvicorn on loopback, configured as `keel serve` configures it
(keel.core.http_server), in a thread with its own event loop and lifespan."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from keel.core.http_server import server_config
from keel.core.settings import Settings
from tests.support.servers import free_port, wait_for_port


@contextmanager
def served(app: Any, settings: Settings, *, start_within_s: float = 60.0) -> Iterator[str]:
    """Yields the base URL once the lifespan has started; stops the server on exit."""
    port = free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, settings, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        wait_for_port(port, deadline_s=start_within_s)
        deadline = time.monotonic() + start_within_s
        while not server.started:  # the port opens before the lifespan has finished starting
            assert time.monotonic() < deadline and thread.is_alive(), (
                f"app did not start within {start_within_s}s"
            )
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
