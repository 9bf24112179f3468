"""The fault proxy's modes against a tiny echo server: each does to the wire what its name says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.support.tcp_proxy import TcpProxy


class Echo:
    """An echo server that counts the bytes it received (to tell 'request lost' from 'reply lost')."""

    def __init__(self) -> None:
        self.received = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> Echo:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self.received += len(data)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[tuple[TcpProxy, Echo]]:
    echo = await Echo().start()
    proxy = await TcpProxy(echo.port).start()
    yield proxy, echo
    await proxy.close()
    await echo.close()


async def _round_trip(port: int, payload: bytes = b"ping", timeout_s: float = 1.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout_s)
    finally:
        writer.close()


async def test_pass_forwards_both_ways(proxy: tuple[TcpProxy, Echo]) -> None:
    p, _ = proxy
    assert await _round_trip(p.port) == b"ping"
    print("\nproxy pass: 1 / 1 round trips echoed")


async def test_latency_delays_each_direction_within_jitter(proxy: tuple[TcpProxy, Echo]) -> None:
    p, _ = proxy
    p.set_mode("latency", latency_s=0.1, jitter_s=0.05)
    started = time.monotonic()
    assert await _round_trip(p.port) == b"ping"
    elapsed = time.monotonic() - started
    # One delay on the way in, one on the way back.
    assert 0.2 <= elapsed < 0.2 + 2 * 0.05 + 0.15, elapsed
    print(f"\nproxy latency 100 ms ± 50 ms jitter: round trip {elapsed * 1000:.0f} ms (bounds 200-450 ms)")


async def test_blackhole_forwards_nothing_and_keeps_the_connection(proxy: tuple[TcpProxy, Echo]) -> None:
    p, echo = proxy
    p.set_mode("blackhole")
    with pytest.raises(TimeoutError):
        await _round_trip(p.port, timeout_s=0.3)
    assert echo.received == 0
    print("\nproxy blackhole: reply after 0.3 s: none; bytes reaching the server 0")


async def test_reset_all_sends_rst_on_open_and_new_connections(proxy: tuple[TcpProxy, Echo]) -> None:
    p, _ = proxy
    reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
    writer.write(b"hello")
    await writer.drain()
    assert await reader.readexactly(5) == b"hello"

    p.set_mode("reset")
    started = time.monotonic()
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        # The open connection dies at once (RST), it does not wait for a timeout.
        await asyncio.wait_for(reader.readexactly(1), 1.0)
    open_reset_ms = (time.monotonic() - started) * 1000
    writer.close()

    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError)):
        await _round_trip(p.port)

    p.set_mode("pass")
    assert await _round_trip(p.port) == b"ping"
    print(
        f"\nproxy reset: open connection dropped in {open_reset_ms:.0f} ms; new connection reset; pass again: echoed"
    )


async def test_drop_response_lets_the_request_through_and_loses_the_reply(
    proxy: tuple[TcpProxy, Echo],
) -> None:
    p, echo = proxy
    p.set_mode("drop-response")
    with pytest.raises(TimeoutError):
        await _round_trip(p.port, b"x" * 1000, timeout_s=0.3)
    assert echo.received == 1000
    print(f"\nproxy drop-response: bytes reaching the server {echo.received} / 1000; reply bytes received 0")


async def test_refuse_still_drops_connections(proxy: tuple[TcpProxy, Echo]) -> None:
    p, _ = proxy
    p.set_mode("refuse")
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError)):
        await _round_trip(p.port)
    print(f"\nproxy refuse: connections accepted and dropped {p.connections}")
