"""Every relay attempt is bounded as a whole: one stuck where no inner timeout reaches (here a producer
start that never returns, as a wedged client would) is cut off after twice the send timeout, logged
with the stack it was stuck in, and the next attempt publishes everything."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable, Sequence

import pytest

from keel.core.bus import OutgoingMessage, Producer
from keel.core.bus.memory import MemoryBus
from keel.core.db import Database
from keel.core.outbox import Outbox, OutboxRelay
from keel.core.supervisor import Supervisor
from tests.integration.outbox.conftest import PARTITIONS, make_events, running, unpublished, write_events
from tests.support.eventually import eventually


class WedgedOnce:
    """The memory bus's producer, except that its first start never returns."""

    def __init__(self, inner: Producer) -> None:
        self.inner = inner
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        if self.starts == 1:
            await asyncio.Event().wait()
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def send(self, message: OutgoingMessage) -> None:
        await self.inner.send(message)

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> None:
        await self.inner.send_many(messages)


async def test_an_attempt_stuck_outside_the_send_is_cut_off_logged_and_retried(
    db: Database,
    outbox: Outbox,
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = topic("tickets.events")
    events = make_events(20, keys=4)
    await write_events(db, outbox, events, name)
    bus = MemoryBus(PARTITIONS)
    producer = WedgedOnce(bus.producer())
    # An attempt is cut off after twice send_timeout_s, 2 s, so that the next attempt (the pool's first
    # connection, the claim's first plan) fits in it on a loaded CI machine; at 0.5 s it once did not.
    relay = new_relay(
        db, producer, send_timeout_s=1.0, backoff_base_s=0.01, backoff_max_s=0.05, concurrency=1
    )
    with caplog.at_level(logging.WARNING, logger="keel.outbox"):
        async with running(relay):
            await eventually(lambda: unpublished(db), until=lambda n: n == 0, timeout_s=10, what="published")
    cut = [r for r in caplog.records if "cut off" in r.getMessage()]
    assert producer.starts >= 2 and len(cut) == 1
    assert cut[0].exc_info is not None
    stack = "".join(traceback.format_exception(*cut[0].exc_info))
    assert f'{__file__}", line' in stack and "in start" in stack  # the call it was stuck in
    await bus.close()


class CancelledOnce(WedgedOnce):
    """Its first send raises CancelledError without anyone cancelling the sender, as awaiting a task
    that ended cancelled does (aiokafka's sender close did, and it ended both relay loops quietly)."""

    def __init__(self, inner: Producer) -> None:
        super().__init__(inner)
        self.sends = 0

    async def start(self) -> None:
        await self.inner.start()

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> None:
        self.sends += 1
        if self.sends <= 2:  # both loops' first sends
            raise asyncio.CancelledError
        await self.inner.send_many(messages)


async def test_loops_ended_by_a_stray_cancellation_are_restarted_by_the_supervisor(
    db: Database,
    outbox: Outbox,
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = topic("tickets.events")
    await write_events(db, outbox, make_events(40, keys=8), name)
    bus = MemoryBus(PARTITIONS)
    relay = new_relay(db, CancelledOnce(bus.producer()), backoff_base_s=0.01, backoff_max_s=0.05)
    supervisor = Supervisor([relay], max_backoff_s=0.1)
    with caplog.at_level(logging.ERROR, logger="keel.supervisor"):
        supervisor.start()
        try:
            await eventually(lambda: unpublished(db), until=lambda n: n == 0, timeout_s=10, what="published")
        finally:
            await supervisor.stop()
    assert supervisor.restarts == {relay.name: 1}
    assert any("ended without a stop" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    await bus.close()
