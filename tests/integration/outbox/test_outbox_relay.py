"""The relay in normal operation, on the memory bus and on the real Kafka-protocol broker:
every committed row is published once, in per-key order, and deleted only after the ack."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable

import orjson
from prometheus_client import REGISTRY

from keel.core.bus.memory import MemoryBus
from keel.core.db import Database
from keel.core.events import Event, decode
from keel.core.outbox import OUTBOX_CHANNEL, Outbox, OutboxRelay
from tests.integration.outbox.conftest import (
    Broker,
    make_events,
    published,
    running,
    unpublished,
    write_events,
)
from tests.support.eventually import eventually

ID_OF = "SELECT id FROM outbox_events WHERE event_id = $1::uuid"


async def test_relay_publishes_every_row_once_and_deletes_it(
    db: Database,
    outbox: Outbox,
    broker: Broker,
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],
):
    name = topic("tickets.events")
    events = make_events(40, keys=7)
    await write_events(db, outbox, events, name)
    before = REGISTRY.get_sample_value("outbox_published_total", {"topic": name}) or 0.0
    log = await broker.log(name)
    relay = new_relay(db, await broker.producer())

    async with running(relay):
        got = await log.read(len(events))
        await eventually(lambda: unpublished(db), until=lambda n: n == 0, what="every row published")

    async with db.unit_of_work() as uow:
        assert await (await uow.raw()).fetchval("SELECT count(*) FROM outbox_events") == 0
    assert sorted(decode(m, "envelope").event_id for m in got) == sorted(e.event_id for e in events)
    assert await log.size() == len(events)
    assert relay.published == len(events)
    assert REGISTRY.get_sample_value("outbox_published_total", {"topic": name}) == before + len(events)
    await log.close()


async def test_relay_publishes_both_wire_formats_with_their_fields(
    db: Database,
    outbox: Outbox,
    broker: Broker,
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],
):
    enveloped, bare = topic("videos.events"), topic("tts.completed")
    trace = (("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),)
    first = Event("video.uploaded", {"video_id": "v1", "size": 3}, key="v1", headers=trace)
    second = Event("tts.completed", {"audio_id": "a1", "route_id": "r1"}, key="a1", headers=trace)
    async with db.unit_of_work() as uow:
        await outbox.add(uow, first, enveloped)
        await outbox.add(uow, second, bare, "bare")
        await uow.commit()
    logs = [await broker.log(enveloped), await broker.log(bare)]

    async with running(new_relay(db, await broker.producer())):
        [envelope_msg] = await logs[0].read(1)
        [bare_msg] = await logs[1].read(1)

    assert orjson.loads(envelope_msg.value) == {
        "event_id": first.event_id,
        "event_type": "video.uploaded",
        "created_at": first.created_at.isoformat().replace("+00:00", "Z"),
        "payload": {"video_id": "v1", "size": 3},
    }
    assert envelope_msg.key == b"v1"
    assert envelope_msg.header("traceparent") == trace[0][1]
    assert orjson.loads(bare_msg.value) == {"audio_id": "a1", "route_id": "r1"}
    assert bare_msg.key == b"a1"
    assert bare_msg.header("event-id") == second.event_id.encode()
    assert bare_msg.header("event-type") == b"tts.completed"
    assert bare_msg.header("traceparent") == trace[0][1]
    decoded = decode(bare_msg, "bare")
    assert (decoded.event_id, decoded.created_at) == (second.event_id, second.created_at)
    for log in logs:
        await log.close()


async def test_row_committed_after_a_higher_id_was_published_is_still_published(
    db: Database,
    outbox: Outbox,
    broker: Broker,
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],
):
    name = topic("orders")
    early, late = Event("a.happened", {"n": 1}, key="k"), Event("a.happened", {"n": 2}, key="k")
    log = await broker.log(name)
    async with running(new_relay(db, await broker.producer())):
        async with db.unit_of_work() as slow:
            await outbox.add(slow, early, name)  # takes the lower id, commits last
            early_id = await (await slow.raw()).fetchval(ID_OF, early.event_id)
            async with db.unit_of_work() as fast:
                await outbox.add(fast, late, name)
                late_id = await (await fast.raw()).fetchval(ID_OF, late.event_id)
                await fast.commit()
            await eventually(lambda: published(db, late.event_id), until=bool, what="the higher id published")
            await slow.commit()
        await eventually(lambda: published(db, early.event_id), until=bool, what="the lower id published")
        got = await log.read(2)

    assert early_id < late_id
    assert [decode(m, "envelope").event_id for m in got] == [late.event_id, early.event_id]
    await log.close()


async def test_a_row_an_earlier_release_marked_published_is_not_sent_again(
    db: Database,
    outbox: Outbox,
    broker: Broker,
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],
):
    # During a rollout a relay of the release before migration 0070 may still mark rows instead of
    # deleting them; the claim must skip what it marked.
    name = topic("orders")
    marked, fresh = Event("a.happened", {"n": 1}, key="k"), Event("a.happened", {"n": 2}, key="k")
    await write_events(db, outbox, [marked, fresh], name)
    async with db.unit_of_work() as uow:
        await (await uow.raw()).execute(
            "UPDATE outbox_events SET published_at = now() WHERE event_id = $1::uuid", marked.event_id
        )
        await uow.commit()
    log = await broker.log(name)
    async with running(new_relay(db, await broker.producer())):
        await eventually(lambda: published(db, fresh.event_id), until=bool, what="the fresh row published")
        got = await log.read(1)
    assert [decode(m, "envelope").event_id for m in got] == [fresh.event_id]
    assert await log.size() == 1
    assert not await published(db, marked.event_id)  # left for the contract migration
    await log.close()


async def test_two_relays_publish_a_backlog_exactly_once_in_key_order(
    db: Database,
    fresh_pg_dsn: str,
    outbox: Outbox,
    broker: Broker,
    topic: Callable[[str], str],
    new_relay: Callable[..., OutboxRelay],
):
    name = topic("tickets.events")
    events = make_events(3000, keys=50)
    backlog, tail = events[:2400], events[2400:]
    for start in range(0, len(backlog), 600):
        await write_events(db, outbox, backlog[start : start + 600], name)
    log = await broker.log(name)
    other_db = Database.connect(fresh_pg_dsn, pool_size=2)  # the same database, as another process would
    relays = [
        # One publish loop each: a relay's two default loops may hold every shard between them (each
        # claims up to half), and on a fast broker the first relay then drains it all alone.
        new_relay(db, await broker.producer(), batch_size=200, name="relay-a", concurrency=1),
        new_relay(other_db, await broker.producer(), batch_size=200, name="relay-b", concurrency=1),
    ]

    started = time.perf_counter()
    async with running(relays[0]), running(relays[1]):
        # More rows keep committing while both relays work through the backlog.
        for start in range(0, len(tail), 50):
            await write_events(db, outbox, tail[start : start + 50], name)
        await eventually(
            lambda: unpublished(db), until=lambda n: n == 0, timeout_s=60, what="backlog drained"
        )
        elapsed = time.perf_counter() - started
        got = await log.read(len(events))
    await other_db.dispose()

    print(
        f"\n[outbox] {broker.kind}: 2 relays published {len(events)} events ({len(tail)} written meanwhile)"
        f" in {elapsed:.2f}s"
        f" = {len(events) / elapsed:,.0f} events/s (relay-a {relays[0].published}, relay-b {relays[1].published})"
    )
    decoded = [(m.partition, m.offset, decode(m, "envelope")) for m in got]
    assert Counter(e.event_id for _, _, e in decoded) == Counter({e.event_id: 1 for e in events})
    assert await log.size() == len(events)
    assert relays[0].published + relays[1].published == len(events)
    assert relays[0].published > 0 and relays[1].published > 0, "both relays took part"
    per_key: dict[str, list[int]] = defaultdict(list)
    for _, _, event in sorted(decoded, key=lambda d: (d[0], d[1])):
        per_key[event.payload["key"]].append(event.payload["seq"])
    assert len(per_key) == 50
    assert all(seqs == list(range(len(seqs))) for seqs in per_key.values()), (
        "each key's events arrive in order"
    )
    await log.close()


async def test_in_process_wake_publishes_without_waiting_for_the_poll(
    db: Database, broker: Broker, topic: Callable[[str], str], new_relay: Callable[..., OutboxRelay], settings
):
    name = topic("story.generate")
    relay = new_relay(db, await broker.producer(), poll_interval_s=30.0, listen=False)
    outbox = Outbox(settings.outbox_shards, wake=relay.notify)
    log = await broker.log(name)
    async with running(relay):
        await eventually(lambda: relay.idle, until=bool, what="relay waiting for its long poll")
        async with db.unit_of_work() as uow:
            await outbox.add(uow, Event("story.generate", {"route_id": "r"}, key="r"), name, "bare")
            await uow.commit()
        await log.read(1, within_s=5.0)
    await log.close()


async def test_notifying_writer_wakes_a_listening_relay_in_another_connection(
    db: Database, broker: Broker, topic: Callable[[str], str], new_relay: Callable[..., OutboxRelay], settings
):
    name = topic("route.confirmed")
    relay = new_relay(db, await broker.producer(), poll_interval_s=30.0)
    writer = Outbox(settings.outbox_shards, notify=True)
    log = await broker.log(name)
    async with running(relay):
        await eventually(
            lambda: relay.listening and relay.idle, until=bool, what="relay listening on " + OUTBOX_CHANNEL
        )
        async with db.unit_of_work() as uow:
            await writer.add(uow, Event("route.confirmed", {"route_id": "r"}, key="r"), name, "bare")
            await uow.commit()
        await log.read(1, within_s=5.0)
    await log.close()


async def test_stats_report_backlog_size_and_age_into_the_gauges(
    db: Database, outbox: Outbox, topic: Callable[[str], str], new_relay: Callable[..., OutboxRelay]
):
    relay = new_relay(db, MemoryBus().producer())
    assert (await relay.stats()).pending == 0
    await write_events(db, outbox, make_events(5, keys=2), topic("orders"))

    stats = await eventually(relay.stats, until=lambda s: s.lag_s > 0.05, what="the backlog ageing")

    assert stats.pending == 5
    assert REGISTRY.get_sample_value("outbox_pending_events") == 5
    assert REGISTRY.get_sample_value("outbox_lag_seconds") == stats.lag_s


async def test_a_report_without_the_count_keeps_the_last_count_and_reads_the_age(
    db: Database, outbox: Outbox, topic: Callable[[str], str], new_relay: Callable[..., OutboxRelay]
):
    relay = new_relay(db, MemoryBus().producer())
    name = topic("orders")
    await write_events(db, outbox, make_events(5, keys=2), name)
    assert (await relay.stats()).pending == 5
    await write_events(db, outbox, make_events(3, keys=2), name)

    aged = await eventually(
        lambda: relay.stats(count=False), until=lambda s: s.lag_s > 0.05, what="the backlog ageing"
    )

    assert aged.pending == 5  # the last count, not a new one
    assert REGISTRY.get_sample_value("outbox_pending_events") == 5
    assert REGISTRY.get_sample_value("outbox_lag_seconds") == aged.lag_s
    assert (await relay.stats()).pending == 8
