"""The console's outbox view reads a bounded number of the oldest unpublished events: exact below the
bound, and past it the oldest events' counts and ages, marked capped."""

from __future__ import annotations

import asyncpg

from keel.core.db import Database
from keel.ops.lag import OUTBOX_PENDING, outbox_lag

FILL = """
INSERT INTO outbox_events (event_id, topic, key, event_type, wire, payload, shard, created_at)
SELECT gen_random_uuid(), $1, 'k' || g, 'thing.happened', 'envelope', '{}'::jsonb, 0,
       now() - make_interval(secs => $3 - g)
FROM generate_series(1, $2) AS g
"""
SERVICES = {"a.events": "a", "b.events": "b"}


async def test_below_the_cap_every_topic_is_counted_exactly(db: Database, fresh_pg_dsn: str) -> None:
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        await conn.execute(FILL, "a.events", 30, 1000)  # ages 999..970 s
        await conn.execute(FILL, "b.events", 20, 100)  # ages 99..80 s
    finally:
        await conn.close()
    rows = await outbox_lag(db, SERVICES, cap=100)
    assert [(r["service"], r["topic"], r["pending"], r["capped"]) for r in rows] == [
        ("a", "a.events", 30, False),
        ("b", "b.events", 20, False),
    ]
    assert 998 < rows[0]["oldest_s"] < 1010 and 98 < rows[1]["oldest_s"] < 110


async def test_past_the_cap_the_oldest_events_are_counted_and_marked(db: Database, fresh_pg_dsn: str) -> None:
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        await conn.execute(FILL, "a.events", 30, 1000)
        await conn.execute(FILL, "b.events", 20, 100)  # written after every a.events event
    finally:
        await conn.close()
    rows = await outbox_lag(db, SERVICES, cap=25)
    # The 26 oldest are all a.events: its oldest's age is exact; b.events is not reached.
    assert [(r["topic"], r["pending"], r["capped"]) for r in rows] == [("a.events", 26, True)]
    assert 998 < rows[0]["oldest_s"] < 1010


async def test_the_view_reads_the_oldest_events_through_the_primary_key(fresh_pg_dsn: str) -> None:
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        await conn.execute(FILL, "a.events", 50_000, 100_000)
        await conn.execute("ANALYZE outbox_events")
        plan = "\n".join(row[0] for row in await conn.fetch("EXPLAIN " + OUTBOX_PENDING, 1_001))
    finally:
        await conn.close()
    assert "Index Scan using pk_outbox_events" in plan and "Limit" in plan, plan
    assert "Seq Scan" not in plan, plan
