"""A small asyncio TCP proxy that takes a dependency off the wire while the server keeps its data.

Modes: `pass` forwards; `refuse` drops every connection at once (what a crashed or partitioned
server looks like to a client that reconnects); `blackhole` keeps connections open and forwards
nothing (a hung server or a lost route: the client waits for its timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Mode = Literal["pass", "refuse", "blackhole"]


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "pass"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "refuse":
            for writer in list(self._writers):
                writer.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, (writer, up_writer)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while chunk := await src.read(65536):
                if self.mode == "pass":
                    dst.write(chunk)
                    await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in pair:
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.transport.abort()
