"""The relay's statements read the unpublished index, not the table's head.

The relay deletes rows from the head of the table as it publishes, and until vacuum comes a scan of
the table or of its primary key steps through every one of them. The planner, which counts live rows
only, would pick such a scan for the claim and the lag probe when asked for "shard s in id order";
keel.core.outbox.sql says how the statements are written so that it cannot."""

from __future__ import annotations

import asyncpg

from keel.core.outbox import sql

SHARDS = 16
ROWS = 20_000

FILL = """
INSERT INTO outbox_events (event_id, topic, key, event_type, wire, payload, shard)
SELECT gen_random_uuid(), 'things', 'k' || g, 'thing.happened', 'envelope',
       jsonb_build_object('n', g), g % $2
FROM generate_series(1, $1) AS g
"""


async def _plan(conn: asyncpg.Connection, statement: str, *args: object) -> str:
    return "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {statement}", *args))


async def test_claim_and_lag_probe_read_the_unpublished_index_of_a_draining_outbox(fresh_pg_dsn):
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        # A backlog with its first half published (deleted), not yet vacuumed; fresh statistics.
        await conn.execute(FILL, ROWS, SHARDS)
        await conn.execute(
            "DELETE FROM outbox_events WHERE id < (SELECT min(id) + $1 FROM outbox_events)", ROWS // 2
        )
        await conn.execute("ANALYZE outbox_events")
        async with conn.transaction():
            claim = await _plan(conn, sql.CLAIM, list(range(SHARDS)), sql.LOCK_CLASS, SHARDS // 2, 500)
        stats = await _plan(conn, sql.STATS, SHARDS, 1_000)
    finally:
        await conn.close()
    print(claim, stats, sep="\n")
    assert "Seq Scan" not in claim
    assert "pk_outbox_events" not in claim
    # The probe of each shard before its lock, and the read of its rows.
    assert claim.count("ix_outbox_events_unpublished") == 2
    # No sort of a shard's rows: the index order is the claim's order within a shard.
    assert claim.count("Sort Key") == 1  # the one merge of the locked shards' rows in id order
    # The oldest row is the head of some shard: one probe of the index per shard. (The capped count
    # of pending rows before it reads them all, however it reads them.)
    oldest = stats[stats.index("generate_series") :]
    assert "Seq Scan" not in oldest
    assert "pk_outbox_events" not in oldest
    assert "Index Cond: ((shard >= s.s) AND (shard <= s.s))" in oldest
