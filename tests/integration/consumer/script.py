"""A handler whose behaviour each test writes into the event payload, and the effect table it writes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence

from keel.core.db import Database, UnitOfWork
from keel.core.events import Event, PoisonMessage
from tests.support.eventually import eventually


class Effects:
    """A scratch table: one row per applied effect and no unique key, so a second effect would show."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self) -> Effects:
        async with self.db.unit_of_work() as uow:
            await (await uow.raw()).execute(
                "CREATE TABLE IF NOT EXISTS effects (id text NOT NULL, traceparent text)"
            )
            await uow.commit()
        return self

    async def count(self, ident: str) -> int:
        async with self.db.connection() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM effects WHERE id = $1", ident))

    async def traceparent(self, ident: str) -> str | None:
        async with self.db.connection() as conn:
            value = await conn.fetchval("SELECT traceparent FROM effects WHERE id = $1", ident)
            return None if value is None else str(value)

    async def wait_for(self, ident: str, *, within_s: float = 20.0) -> int:
        return await eventually(
            lambda: self.count(ident), until=lambda n: n >= 1, timeout_s=within_s, what=f"effect of {ident}"
        )


async def insert_effect(event: Event, uow: UnitOfWork) -> None:
    traceparent = dict(event.headers).get("traceparent")
    await (await uow.raw()).execute(
        "INSERT INTO effects (id, traceparent) VALUES ($1, $2)",
        event.payload["id"],
        traceparent.decode() if traceparent else None,
    )


class Script:
    """Payload `fail=n`: raise on the first n calls; `invalid=True`: reject as poison (a schema check);
    `transient=n`: raise a connection error on the first n calls; `gate=name`: the first call waits
    until the test opens that gate."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.applied: list[str] = []
        self.applied_at: dict[str, float] = {}
        self.failed_at: dict[str, list[float]] = {}
        self.batches: list[int] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.waiting: set[str] = set()

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    async def _check(self, event: Event) -> None:
        payload = event.payload
        ident = payload["id"]
        self.calls[ident] += 1
        call = self.calls[ident]
        if "gate" in payload and call == 1:
            self.waiting.add(ident)
            await self.gate(payload["gate"]).wait()
        if payload.get("invalid"):
            raise PoisonMessage(f"schema: {ident} is invalid")
        if call <= payload.get("transient", 0):
            self.failed_at.setdefault(ident, []).append(time.monotonic())
            raise ConnectionResetError(f"scripted outage {call}")
        if call <= payload.get("fail", 0):
            self.failed_at.setdefault(ident, []).append(time.monotonic())
            raise RuntimeError(f"scripted failure {call}")

    async def handle(self, event: Event, uow: UnitOfWork) -> None:
        await self._check(event)
        await insert_effect(event, uow)
        self._applied(event)

    async def handle_batch(self, events: Sequence[Event], uow: UnitOfWork) -> None:
        for event in events:
            await self._check(event)
        for event in events:
            await insert_effect(event, uow)
        self.batches.append(len(events))
        for event in events:
            self._applied(event)

    def _applied(self, event: Event) -> None:
        # Recorded before the commit: a test reads the table for what is durable, this for order.
        ident = event.payload["id"]
        self.applied.append(ident)
        self.applied_at.setdefault(ident, time.monotonic())
