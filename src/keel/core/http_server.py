"""How Keel serves HTTP: granian's Rust HTTP/1.1 server, embedded in the process's own event loop.

granian parses requests and writes responses in Rust threads beside the interpreter's, so on a small
machine the Python thread keeps only Keel's work (docs/design-decisions.md has the figures). It also
bounds what a client may do before the app sees a request:
- a request head (request line and headers) not complete within `HTTP_HEADER_TIMEOUT_S` of the
  connection opening, or of the previous response on a kept-alive connection, closes the connection
  (slowloris, and connections that never send a byte);
- a head over `MAX_HEADER_BYTES` is answered 431 and the connection closed; a request the parser
  refuses, 400. granian writes those two itself, with an empty body: the app never saw the request.

Keel drives the ASGI lifespan itself (`Lifespan`) rather than leaving it to granian: the services start
before the port opens, a failed start-up is the app's one line and a return value, and the shutdown
waits for the requests in flight (`InFlight`) before it stops the services they use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from granian._granian import SocketHolder
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.server.embed import Server
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from keel.core.identity import PEER
from keel.core.settings import Settings

log = logging.getLogger("keel.http")
BACKLOG = 2048
# Requests still running when a stop is asked get this long to finish before the services stop.
DRAIN_S = 10.0
# hyper, under granian, refuses a read buffer smaller than this.
MIN_HEAD_BUFFER = 8192


class Lifespan:
    """The ASGI lifespan of an app, spoken by the server (what uvicorn's `LifespanOn` does)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failure: str | None = None

    async def startup(self) -> bool:
        """Starts the app; False (its one line logged) when it failed."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._started.wait()
        if self.failure is not None:
            log.error("%s", self.failure)
            return False
        return True

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._stopped.wait()
        if self.failure is not None:
            log.error("%s", self.failure)

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        try:
            await self.app(scope, self._inbox.get, self._send)
        except BaseException as exc:  # an app without a lifespan, or one that raised out of it
            if not self._started.is_set():
                self.failure = f"start-up failed: {exc!r}"
                log.debug("start-up failed", exc_info=True)
        finally:
            self._started.set()
            self._stopped.set()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind.endswith(".failed"):
            self.failure = message.get("message") or f"{kind.replace('.', ' ')}"
        (self._started if kind.startswith("lifespan.startup") else self._stopped).set()


class InFlight:
    """Counts the HTTP requests being answered, so a stop can wait for them (`drained`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.count += 1
        self._idle.clear()
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1
            if not self.count:
                self._idle.set()

    async def drained(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class RecordPeer:
    """Keeps the TCP peer in the scope (`keel.core.identity.PEER`) before the proxy middleware
    replaces `client` with the address a trusted proxy forwarded: headers only a trusted proxy may
    set (X-User-Roles) are judged by the peer, never by the forwarded client."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            scope[PEER] = scope.get("client")
        await self.app(scope, receive, send)


def behind_proxies(app: Any, settings: Settings) -> Any:
    """X-Forwarded-For/-Proto believed only from TRUSTED_PROXIES (uvicorn's middleware, which by default
    trusts loopback, so any local client could pick its address per request); the app unwrapped when
    none is trusted (no hop on the hot path)."""
    if not settings.trusted_proxies:
        return app
    trusted = [str(network) for network in settings.trusted_proxies]
    return RecordPeer(ProxyHeadersMiddleware(app, trusted_hosts=trusted))


def bind(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A listening socket (`--workers` hands one to every worker process, inherited by descriptor)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


class _OnSocket(Server):
    """granian's embedded server accepting on a socket Keel bound (or inherited) itself."""

    def __init__(self, target: Any, sock: socket.socket, **options: Any) -> None:
        super().__init__(target, **options)
        self._socket = sock

    def _init_shared_socket(self) -> None:
        # A holder built from the state it pickles as (descriptor, is a Unix socket, backlog): how
        # granian itself hands a socket to its worker processes. It owns the descriptor from here.
        self._ssp = None
        self._shd = SocketHolder(self._socket.detach(), False, self.backlog)  # type: ignore[call-arg,assignment]


class HttpServer:
    """One app on one socket: `await run()` starts the app, opens the port (binding `host:port` unless
    handed a socket), serves until `stop()`, waits for the requests in flight, stops the app.
    `started` says whether the app started."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
    ) -> None:
        self.app = app
        self.in_flight = InFlight(behind_proxies(app, settings))
        self.address = (host, port)
        self.sock = sock
        self.started = False
        self._stop = asyncio.Event()
        self._http1 = HTTP1Settings(
            header_read_timeout=int(settings.http_header_timeout_s * 1000),
            max_buffer_size=max(settings.max_header_bytes, MIN_HEAD_BUFFER),
        )

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> bool:
        lifespan = Lifespan(self.app)
        if not await lifespan.startup():
            if self.sock is not None:
                self.sock.close()
            return False
        sock = self.sock or bind(*self.address)  # the port opens once every service has started
        server = _OnSocket(
            self.in_flight,
            sock,
            interface=Interfaces.ASGINL,  # the lifespan is ours, above
            http=HTTPModes.http1,
            http1_settings=self._http1,
            backlog=BACKLOG,
            websockets=False,
            log_enabled=False,
        )
        before = _thread_ids()
        serving = asyncio.create_task(server.serve())
        ours = await _new_threads(before)
        asked = asyncio.create_task(self._stop.wait())
        self.started = True
        try:
            await asyncio.wait({serving, asked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            asked.cancel()
            server.stop()  # type: ignore[no-untyped-call]
            await serving
            await _gone(ours)
            if not await self.in_flight.drained(DRAIN_S):
                log.warning("stopped with %d requests still running after %gs", self.in_flight.count, DRAIN_S)
            await lifespan.shutdown()
        return True


# granian's runtime threads finish after its serve task has returned; one still running when the
# interpreter finalizes aborts the process (exit 134). So a stop waits for the threads the server
# started (Linux: /proc; elsewhere nothing is waited for).
THREADS_START_S = 1.0
THREADS_STOP_S = 5.0


def _thread_ids() -> set[str]:
    try:
        return set(os.listdir("/proc/self/task"))
    except FileNotFoundError:
        return set()


async def _new_threads(before: set[str]) -> set[str]:
    """The threads started since `before` was taken, once there are some (none where /proc is not)."""
    if not before:
        return set()
    return await _polled(lambda: _thread_ids() - before, until=bool, timeout_s=THREADS_START_S)


async def _gone(threads: set[str]) -> None:
    await _polled(lambda: threads & _thread_ids(), until=lambda alive: not alive, timeout_s=THREADS_STOP_S)


async def _polled(
    probe: Callable[[], set[str]], *, until: Callable[[set[str]], bool], timeout_s: float
) -> set[str]:
    """`probe()` every 5 ms until `until` holds or `timeout_s` passes (the OS is polled: no event)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if until(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.005)


def serve(app: Any, host: str, port: int, settings: Settings, sock: socket.socket | None = None) -> bool:
    """`keel up` / `serve` / `worker`: serves `app` in this thread on uvloop until SIGTERM or SIGINT
    (each drains, then returns normally); False when the app failed to start."""
    import uvloop

    async def main() -> bool:
        server = HttpServer(app, settings, host=host, port=port, sock=sock)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, server.stop)
        return await server.run()

    return uvloop.run(main())
