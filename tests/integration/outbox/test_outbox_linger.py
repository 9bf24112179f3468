"""A relay with a linger (OUTBOX_LINGER_S): after a batch that drained the backlog it waits before its
next claim, so rows committed meanwhile go out together in one transaction; a full batch is followed
at once, so a backlog drains at full speed."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from keel.core.db import Database
from keel.core.outbox import Outbox, OutboxRelay
from tests.integration.outbox.conftest import Broker, make_events, running, unpublished, write_events
from tests.support.bus import Recording
from tests.support.eventually import eventually

LINGER_S = 1.0


async def test_rows_committed_while_the_relay_lingers_are_published_in_one_batch(
    db: Database,
    outbox: Outbox,
    broker: Broker,
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],
):
    name = topic("tickets.events")
    first, trickle = make_events(1, keys=1), make_events(20, keys=5)
    batches = Recording(await broker.producer())
    relay = new_relay(db, batches, concurrency=1, linger_s=LINGER_S, listen=False)
    async with running(relay):
        await write_events(db, outbox, first, name)
        await eventually(lambda: unpublished(db), until=lambda n: n == 0, timeout_s=10, what="first row out")
        lingering_since = time.monotonic()
        for event in trickle:  # one commit each, as creates arrive
            await write_events(db, outbox, [event], name)
        assert time.monotonic() - lingering_since < LINGER_S, "the trickle took longer than the linger"
        await eventually(lambda: unpublished(db), until=lambda n: n == 0, timeout_s=10, what="trickle out")
    assert relay.published == 21
    sent = [{orjson.loads(m.value)["event_id"] for m in batch} for _, batch in batches.acked]
    assert sent == [{first[0].event_id}, {e.event_id for e in trickle}]


async def test_a_backlog_even_on_one_shard_drains_without_lingering(
    db: Database,
    outbox: Outbox,
    broker: Broker,
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],
):
    name = topic("tickets.events")
    hot = make_events(150, keys=1)  # one key: one shard
    light = [e for e in make_events(40, keys=40) if e.key != hot[0].key][:2]
    await write_events(db, outbox, [*hot, *light], name)
    relay = new_relay(db, await broker.producer(), concurrency=1, batch_size=50, linger_s=30.0, listen=False)
    began = time.monotonic()
    async with running(relay):
        await eventually(lambda: unpublished(db), until=lambda n: n == 0, timeout_s=10, what="backlog out")
    assert relay.published == 152
    # Claims that come out short of a full batch (the hot shard's share, the light shard's two rows)
    # still leave rows behind: the relay follows them at once instead of lingering its 30 s.
    assert time.monotonic() - began < 10
