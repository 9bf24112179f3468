"""Writing to the outbox: the event commits with the business change or not at all."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from keel.core.db import Database
from keel.core.events import Event
from keel.core.outbox import Outbox, outbox_row, shard_for

SCRATCH = "CREATE TABLE IF NOT EXISTS scratch_orders (id text PRIMARY KEY, total int NOT NULL)"


async def _counts(db: Database, order_id: str, event_id: str) -> tuple[int, int]:
    async with db.unit_of_work() as uow:
        conn = await uow.raw()
        business = await conn.fetchval("SELECT count(*) FROM scratch_orders WHERE id = $1", order_id)
        events = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE event_id = $1::uuid", event_id)
    return business, events


@pytest.fixture
async def scratch(db: Database) -> Database:
    async with db.unit_of_work() as uow:
        await (await uow.raw()).execute(SCRATCH)
        await uow.commit()
    return db


async def test_outbox_row_commits_with_the_business_row(scratch: Database, outbox: Outbox):
    event = Event("order.placed", {"order_id": "o-1", "total": 5}, key="o-1")
    async with scratch.unit_of_work() as uow:
        conn = await uow.raw()
        await conn.execute("INSERT INTO scratch_orders (id, total) VALUES ($1, $2)", "o-1", 5)
        await outbox.add(uow, event, "orders.events")
        await uow.commit()

    assert await _counts(scratch, "o-1", event.event_id) == (1, 1)


async def test_outbox_row_rolls_back_with_the_business_row(scratch: Database, outbox: Outbox):
    event = Event("order.placed", {"order_id": "o-2"}, key="o-2")
    with pytest.raises(RuntimeError, match="use case failed"):
        async with scratch.unit_of_work() as uow:
            conn = await uow.raw()
            await conn.execute("INSERT INTO scratch_orders (id, total) VALUES ($1, $2)", "o-2", 7)
            await outbox.add(uow, event, "orders.events")
            raise RuntimeError("use case failed after both writes")

    assert await _counts(scratch, "o-2", event.event_id) == (0, 0)


async def test_unit_of_work_left_without_commit_keeps_neither_row(scratch: Database, outbox: Outbox):
    event = Event("order.placed", {"order_id": "o-3"}, key="o-3")
    async with scratch.unit_of_work() as uow:
        await outbox.add(uow, event, "orders.events")
        await (await uow.raw()).execute("INSERT INTO scratch_orders (id, total) VALUES ('o-3', 1)")

    assert await _counts(scratch, "o-3", event.event_id) == (0, 0)


async def test_failing_outbox_insert_rolls_back_the_business_row(scratch: Database, outbox: Outbox):
    first = Event("order.placed", {"order_id": "o-4"}, key="o-4")
    async with scratch.unit_of_work() as uow:
        await outbox.add(uow, first, "orders.events")
        await uow.commit()

    with pytest.raises(Exception, match="uq_outbox_events_event_id"):
        async with scratch.unit_of_work() as uow:
            await (await uow.raw()).execute("INSERT INTO scratch_orders (id, total) VALUES ('o-5', 1)")
            await outbox.add(uow, first, "orders.events")  # the same event id again
            await uow.commit()

    assert await _counts(scratch, "o-5", first.event_id) == (0, 1)


async def test_event_too_large_to_publish_is_refused_and_the_business_row_rolls_back(
    scratch: Database, outbox: Outbox
):
    huge = Event("order.placed", {"blob": "x" * 1_000_000}, key="o-6")
    with pytest.raises(ValueError, match="at most"):
        async with scratch.unit_of_work() as uow:
            await (await uow.raw()).execute("INSERT INTO scratch_orders (id, total) VALUES ('o-6', 1)")
            await outbox.add(uow, huge, "orders.events")
            await uow.commit()

    assert await _counts(scratch, "o-6", huge.event_id) == (0, 0)


async def test_row_holds_the_event_its_shard_and_wire(db: Database, outbox: Outbox):
    event = Event(
        "tts.completed",
        {"audio_id": "a-1", "ok": True},
        key="a-1",
        headers=(("traceparent", b"00-ab-cd-01"),),
    )
    async with db.unit_of_work() as uow:
        await outbox.add(uow, event, "tts.completed", "bare")
        await uow.commit()

    async with db.unit_of_work() as uow:
        row = await (await uow.raw()).fetchrow(
            "SELECT event_id::text, topic, key, event_type, wire, payload::text, headers::text, shard,"
            " created_at, published_at FROM outbox_events"
        )
    assert row["event_id"] == event.event_id
    assert (row["topic"], row["key"], row["event_type"], row["wire"]) == (
        "tts.completed",
        "a-1",
        "tts.completed",
        "bare",
    )
    assert row["payload"] == '{"ok": true, "audio_id": "a-1"}'
    assert row["headers"] == '{"traceparent": "00-ab-cd-01"}'
    assert row["shard"] == shard_for("a-1", outbox.shards)
    assert row["created_at"] == event.created_at
    assert row["published_at"] is None


async def test_add_many_inserts_every_event_in_input_order(db: Database, outbox: Outbox):
    events = [Event("item.added", {"i": i}, key=f"k{i % 3}") for i in range(250)]
    async with db.unit_of_work() as uow:
        await outbox.add_many(uow, events, "items", "bare")
        await uow.commit()

    async with db.unit_of_work() as uow:
        rows = await (await uow.raw()).fetch(
            "SELECT event_id::text, key, shard, wire FROM outbox_events ORDER BY id"
        )
    assert [r["event_id"] for r in rows] == [e.event_id for e in events]
    assert all(r["shard"] == shard_for(r["key"], outbox.shards) and r["wire"] == "bare" for r in rows)


async def test_keyless_events_are_spread_over_shards(outbox: Outbox):
    shards = {outbox_row(Event("x", {}), "x", outbox.shards).shard for _ in range(200)}
    assert len(shards) > outbox.shards // 2


def test_shard_of_a_key_is_the_same_in_every_process():
    # Pinned values: changing the hash would move keys between shards and break per-key order
    # across a rolling deploy. A child process with another hash seed must agree.
    assert [shard_for(k, 16) for k in ("ticket-1", "ticket-2", "a", "")] == [5, 15, 3, 0]
    child = subprocess.run(
        [sys.executable, "-c", "from keel.core.outbox import shard_for; print(shard_for('ticket-1', 16))"],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == "5"


def test_shard_count_must_be_positive():
    with pytest.raises(ValueError, match="shards"):
        Outbox(0)
