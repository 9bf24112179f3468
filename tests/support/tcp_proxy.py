"""A small asyncio TCP proxy that takes a dependency off the wire while the server keeps its data.

Modes: `pass` forwards; `refuse` drops every connection at once (what a crashed or partitioned
server looks like to a client that reconnects); `blackhole` keeps connections open and forwards
nothing (a hung server or a lost route: the client waits for its timeout); `latency` forwards each
chunk after `latency_s` plus up to `jitter_s` (order kept); `reset` sends a TCP RST on every
existing and every new connection (a restarted server as its clients see it); `drop-response`
forwards what the client sends and swallows what the server answers (the request took effect,
the reply was lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

Mode = Literal["pass", "refuse", "blackhole", "latency", "reset", "drop-response"]


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN: SO_LINGER on, timeout 0, then close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    def __init__(
        self,
        target_port: int,
        target_host: str = "127.0.0.1",
        *,
        latency_s: float = 0.0,
        jitter_s: float = 0.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "pass"
        self.port = 0
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self.connections = 0  # accepted client connections, whatever the mode did with them
        self.swallowed = 0  # chunks a client sent that the mode did not forward
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @classmethod
    def in_front_of(cls, dsn: str) -> TcpProxy:
        """A proxy (not started) to the TCP server `dsn` names."""
        parts = urlsplit(dsn)
        if parts.port is None:
            raise ValueError(f"no TCP port in {dsn!r}")
        return cls(parts.port, parts.hostname or "127.0.0.1")

    def reroute(self, dsn: str) -> str:
        """`dsn` (its user, database and options) pointed at this proxy instead of its server."""
        parts = urlsplit(dsn)
        credentials, at, _ = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{credentials}{at}127.0.0.1:{self.port}"))

    def set_mode(self, mode: Mode, *, latency_s: float | None = None, jitter_s: float | None = None) -> None:
        if latency_s is not None:
            self.latency_s = latency_s
        if jitter_s is not None:
            self.jitter_s = jitter_s
        self.mode = mode
        if mode == "refuse":
            for writer in list(self._writers):
                writer.transport.abort()
        elif mode == "reset":
            self.reset_all()

    def reset_all(self) -> None:
        """RST every open connection (both sides) without changing the mode."""
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "refuse":
            writer.transport.abort()
            return
        if self.mode == "reset":
            _reset(writer)
            return
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        for src, dst, is_reply in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pipe(src, dst, (writer, up_writer), is_reply))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _forwards(self, is_reply: bool) -> bool:
        if self.mode in ("pass", "latency"):
            return True
        return self.mode == "drop-response" and not is_reply

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        is_reply: bool = False,
    ) -> None:
        try:
            while chunk := await src.read(65536):
                if self.mode == "latency":
                    # Sleeping inside the pipe keeps the byte order; each direction waits on its own.
                    await asyncio.sleep(self.latency_s + random.uniform(0, self.jitter_s))
                if self._forwards(is_reply):
                    dst.write(chunk)
                    await dst.drain()
                elif not is_reply:
                    self.swallowed += 1
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in pair:
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.transport.abort()
