"""Chaos suites: sizes scale with KEEL_CHAOS_SCALE (1 in CI; `make chaos` runs them larger)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.support import servers
from tests.support.tcp_proxy import TcpProxy


def chaos_scale() -> int:
    return max(1, int(os.environ.get("KEEL_CHAOS_SCALE", "1") or "1"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)


@pytest_asyncio.fixture
async def broker_proxy() -> AsyncIterator[TcpProxy]:
    """A private broker reachable only through a fault proxy (it advertises the proxy's port)."""
    port = servers.free_port()
    proxy = await TcpProxy(port).start()
    with servers.running(servers.kafka_broker(port=port, advertised_port=proxy.port)):
        yield proxy
        await proxy.close()
