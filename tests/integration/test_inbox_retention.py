"""The inbox forgets handled events only once they are older than its retention."""

from __future__ import annotations

import asyncio

import asyncpg

from keel.core.retention import INBOX_PURGE, InboxRetention, purge
from tests.support.eventually import eventually


async def _seed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """
            INSERT INTO processed_events (consumer, event_id, processed_at)
            SELECT 'c', 'old-' || g, now() - interval '8 days' FROM generate_series(1, 12) g
            UNION ALL
            SELECT 'c', 'new-' || g, now() - interval '1 hour' FROM generate_series(1, 3) g
            """
        )
    finally:
        await conn.close()


async def _left(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return sorted(r[0] for r in await conn.fetch("SELECT event_id FROM processed_events"))
    finally:
        await conn.close()


async def test_only_records_older_than_the_retention_are_deleted_in_batches(db, fresh_pg_dsn):
    await _seed(fresh_pg_dsn)
    deleted = await purge(db, INBOX_PURGE, older_than_s=7 * 24 * 3600, batch_size=5)
    assert deleted == 12
    assert await _left(fresh_pg_dsn) == ["new-1", "new-2", "new-3"]


async def test_the_retention_worker_purges_at_start_and_stops_when_asked(db, fresh_pg_dsn):
    await _seed(fresh_pg_dsn)
    worker = InboxRetention(db, max_age_s=7 * 24 * 3600, interval_s=3600, batch_size=4)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: worker.deleted, until=lambda n: n == 12, timeout_s=10, what="12 purged")
    await worker.stop()
    await asyncio.wait_for(task, 5)
    assert len(await _left(fresh_pg_dsn)) == 3


async def test_a_purge_batch_reads_the_expired_rows_through_the_index_not_the_whole_table(db, fresh_pg_dsn):
    # The batch once named its rows by (consumer, event_id) IN (...) with a volatile cutoff: the
    # planner read the table in physical order to find the expired rows and hashed the batch against
    # a second read of the whole table, for every batch.
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        await conn.execute(
            """
            INSERT INTO processed_events (consumer, event_id, processed_at)
            SELECT 'c' || (g % 8), 'e-' || g, now() - make_interval(mins => g / 4)
            FROM generate_series(1, 50000) g
            """
        )
        await conn.execute("ANALYZE processed_events")
        plan = "\n".join(row[0] for row in await conn.fetch("EXPLAIN " + INBOX_PURGE, 7 * 24 * 3600.0, 5_000))
        assert "Seq Scan" not in plan, plan
        assert "Tid Scan on processed_events" in plan, plan
        assert "Index Cond: (processed_at <" in plan, plan
        expired = await conn.fetchval(
            "SELECT count(*) FROM processed_events WHERE processed_at < now() - interval '7 days'"
        )
        assert expired > 5_000  # more than one batch
        assert await purge(db, INBOX_PURGE, older_than_s=7 * 24 * 3600) == expired
        assert await conn.fetchval("SELECT count(*) FROM processed_events") == 50_000 - expired
    finally:
        await conn.close()
