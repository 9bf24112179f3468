"""The operator's workflow listing reads its newest rows through an index, not a sort of the table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from keel.ops.workflows import LIST_WORKFLOWS


async def test_the_newest_workflows_are_read_through_the_index_without_sorting_the_table(fresh_pg_dsn):
    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        await conn.execute(
            """
            INSERT INTO cityguide_workflows (route_id, mode, lang, status, route, confirmed_at, created_at)
            SELECT 'r-' || g, 'full', 'ru', CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'completed' END,
                   '{}'::jsonb, now(), now() - make_interval(secs => g)
            FROM generate_series(1, 20000) g
            """
        )
        await conn.execute("ANALYZE cityguide_workflows")
        since = datetime.now(UTC) - timedelta(hours=1)
        for status, window in ((None, None), ("failed", None), (None, since)):
            plan = "\n".join(
                row[0] for row in await conn.fetch("EXPLAIN " + LIST_WORKFLOWS, status, window, None, 50)
            )
            assert "ix_cityguide_workflows_created_at" in plan, plan
            assert "Sort Key: w.created_at" not in plan and "Seq Scan on cityguide_workflows w" not in plan, (
                plan
            )
        newest = await conn.fetch(LIST_WORKFLOWS, None, None, None, 3)
        assert [r["route_id"] for r in newest] == ["r-1", "r-2", "r-3"]
    finally:
        await conn.close()
