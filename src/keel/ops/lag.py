"""How far behind the platform is: unpublished outbox events per topic, consumer lag per group and
partition (end offset minus committed offset)."""

from __future__ import annotations

from typing import Any

from keel.core.db import Database
from keel.ops.dlq import MARK_GROUP_PREFIX
from keel.ops.topics import TopicAdmin

OUTBOX_PENDING = """
SELECT topic, count(*) AS pending, extract(epoch FROM now() - min(created_at)) AS oldest_s
  FROM outbox_events WHERE published_at IS NULL GROUP BY topic ORDER BY topic
"""


async def outbox_lag(db: Database, services_by_topic: dict[str, str]) -> list[dict[str, Any]]:
    async with db.connection() as conn:
        rows = await conn.fetch(OUTBOX_PENDING)
    return [
        {
            "service": services_by_topic.get(r["topic"], "unknown"),
            "topic": r["topic"],
            "pending": r["pending"],
            "oldest_s": round(float(r["oldest_s"]), 3),
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
