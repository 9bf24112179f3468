"""Writes and reads the operator audit (keel.ops.tables.ops_audit)."""

from __future__ import annotations

from typing import Any

import orjson

from keel.core.db import Database

RECENT = 50


class Audit:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, actor: str, action: str, topic: str, records: int, detail: dict[str, Any]) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO ops_audit (actor, action, topic, records, detail) VALUES ($1, $2, $3, $4, $5::jsonb)",
                actor,
                action,
                topic,
                records,
                orjson.dumps(detail).decode(),
            )

    async def recent(self, limit: int = RECENT) -> list[dict[str, Any]]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT id, at, actor, action, topic, records, detail::text AS detail "
                "FROM ops_audit ORDER BY id DESC LIMIT $1",
                limit,
            )
        return [
            {
                "id": r["id"],
                "at": r["at"].isoformat(),
                "actor": r["actor"],
                "action": r["action"],
                "topic": r["topic"],
                "records": r["records"],
                "detail": orjson.loads(r["detail"]),
            }
            for r in rows
        ]
