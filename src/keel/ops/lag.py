"""How far behind the platform is: unpublished outbox events per topic, consumer lag per group and
partition (end offset minus committed offset)."""

from __future__ import annotations

from typing import Any

from keel.core.db import Database
from keel.ops.dlq import MARK_GROUP_PREFIX
from keel.ops.topics import TopicAdmin

# The view reads at most this many unpublished events, the oldest first (through the primary key):
# during an outage's backlog, counting every row would read the whole table on each refresh, when the
# database is busiest and the operator is looking.
PENDING_READ_CAP = 100_000

OUTBOX_PENDING = """
SELECT topic, count(*) AS pending, extract(epoch FROM now() - min(created_at)) AS oldest_s
  FROM (SELECT topic, created_at FROM outbox_events WHERE published_at IS NULL ORDER BY id LIMIT $1) AS o
 GROUP BY topic ORDER BY topic
"""


async def outbox_lag(
    db: Database, services_by_topic: dict[str, str], *, cap: int = PENDING_READ_CAP
) -> list[dict[str, Any]]:
    """Unpublished events per topic and the age of each topic's oldest. Past `cap` events, each
    row says `capped`: its count covers the `cap` oldest events only (more are waiting), and a topic
    whose events all came later is not listed."""
    async with db.connection() as conn:
        rows = await conn.fetch(OUTBOX_PENDING, cap + 1)
    capped = sum(r["pending"] for r in rows) > cap
    return [
        {
            "service": services_by_topic.get(r["topic"], "unknown"),
            "topic": r["topic"],
            "pending": r["pending"],
            "oldest_s": round(float(r["oldest_s"]), 3),
            "capped": capped,
        }
        for r in rows
    ]


async def consumer_lag(admin: TopicAdmin) -> list[dict[str, Any]]:
    """Every consumer group but the DLQ marks (their pending count is the DLQ view's)."""
    ends: dict[str, dict[int, tuple[int, int]]] = {}
    lags: list[dict[str, Any]] = []
    for group in await admin.group_ids():
        if group.startswith(MARK_GROUP_PREFIX):
            continue
        for tp, (committed, _) in sorted((await admin.group_offsets(group)).items()):
            if tp.topic not in ends:
                ends[tp.topic] = await admin.partition_offsets(tp.topic)
            end = ends[tp.topic].get(tp.partition, (0, committed))[1]
            lags.append(
                {
                    "group": group,
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "committed": committed,
                    "end": end,
                    "lag": max(0, end - committed),
                }
            )
    return lags
