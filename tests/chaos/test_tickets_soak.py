"""Tickets soak: thousands of creates while the broker is cut off on the wire and the relay and the
notifications consumer die in their worst windows; at the end every ticket has exactly one
notification, none is lost, and tickets.dlq is empty.

Creates run in process (the tickets API with its workers off); the outbox relay and the
notifications consumer run as child processes that are restarted after each death:
- relay: a life armed with the crash point `outbox.after_send` dies right after the broker acked a
  batch, before its rows are deleted (it is published again by the next life);
- consumer: a life armed with `consumer.after_effect` dies after its database commit, before its
  offset commit (the next owner of those partitions gets the records again; the inbox absorbs them);
- broker: the fault proxy it advertises blackholes every connection for a while, then resets them,
  and at other times just resets them (the test broker keeps no data across a restart).

A crash point fires every time it is reached, so only the lives started for a kill are armed; the
life before is stopped cleanly and the life after runs unarmed. The creates are paced so every fault
lands while creates are still coming in. Size: 2,000 creates and 3 s blackholes in CI, 20,000 and
10 s under `make chaos`."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from keel.core.runtime import build_app
from keel.tickets.spec import SPEC
from tests.chaos.conftest import chaos_scale
from tests.chaos.soak_children import WorkerChild, child_env
from tests.support.eventually import eventually
from tests.support.tcp_proxy import TcpProxy
from tests.support.topic_log import KafkaTopicLog

CONCURRENCY = 16
# (share of the creates done, fault); each fault runs while the creates go on to the next one's share.
SCHEDULE = (
    (0.10, "relay kill"),
    (0.15, "consumer kill"),
    (0.25, "blackhole"),
    (0.40, "reset"),
    (0.45, "relay kill"),
    (0.50, "consumer kill"),
    (0.60, "blackhole"),
    (0.70, "relay kill"),
    (0.75, "consumer kill"),
    (0.85, "reset"),
)
RETRYABLE = {409, 429, 503, 504}


class Load:
    """`total` creates by CONCURRENCY clients, never more started than `allowed` (the pacing)."""

    def __init__(self, client: httpx.AsyncClient, user: str, total: int) -> None:
        self.client, self.user, self.total = client, user, total
        self.allowed = 0
        self.started = 0
        self.ids: list[str] = []  # one per 201
        self.retries = 0
        self._gate = asyncio.Event()

    def allow(self, count: int) -> None:
        self.allowed = min(self.total, max(self.allowed, count))
        self._gate.set()

    @property
    def finished(self) -> bool:
        return len(self.ids) >= self.total

    async def run(self) -> None:
        await asyncio.gather(*(self._client() for _ in range(CONCURRENCY)))

    async def nudge(self) -> None:
        """More creates now, for a worker armed to die that has nothing to act on yet."""
        if self.allowed < self.total:
            self.allow(self.allowed + 5)
        elif self.finished:
            self.ids.append(await self.create(f"extra {len(self.ids)}"))

    async def create(self, title: str) -> str:
        """One ticket; a retry carries the same Idempotency-Key, so it cannot create a second one."""
        headers = {"X-User-Id": self.user, "Idempotency-Key": uuid.uuid4().hex}
        body = {"title": title, "description": "Soak under broker faults."}
        for attempt in range(10):
            response = await self.client.post("/v1/tickets", json=body, headers=headers)
            if response.status_code == 201:
                return str(response.json()["id"])
            assert response.status_code in RETRYABLE, (response.status_code, response.text)
            self.retries += 1
            await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError(f"create {title!r} still failing after 10 attempts")

    async def _client(self) -> None:
        while True:
            while self.started >= self.allowed:
                if self.started >= self.total:
                    return
                self._gate.clear()
                await self._gate.wait()
            self.started += 1
            self.ids.append(await self.create(f"ticket {self.started}"))


class Faults:
    def __init__(self, proxy: TcpProxy, relay: WorkerChild, consumer: WorkerChild, outage_s: float) -> None:
        self.proxy, self.relay, self.consumer, self.outage_s = proxy, relay, consumer, outage_s
        self.blackholes = 0
        self.resets = 0

    async def run(self, step: str, load: Load) -> str:
        """Inflict `step`; returns what it took."""
        if step == "relay kill":
            return await self.relay.crash(load.nudge)
        if step == "consumer kill":
            return await self.consumer.crash(load.nudge)
        if step == "blackhole":
            self.proxy.set_mode("blackhole")
            await asyncio.sleep(self.outage_s)  # the outage itself, not a wait for a result
            self.blackholes += 1
        self._reset()
        return "then reset" if step == "blackhole" else "all connections"

    def _reset(self) -> None:
        self.proxy.set_mode("reset")
        self.proxy.set_mode("pass")
        self.resets += 1


async def _drive(faults: Faults, load: Load) -> None:
    load.allow(int(SCHEDULE[0][0] * load.total))
    for i, (share, step) in enumerate(SCHEDULE):
        await eventually(
            lambda: len(load.ids),
            until=lambda done, share=share: done >= share * load.total,
            timeout_s=600,
            what=f"{share:.0%} of the creates before the {step}",
        )
        upto = SCHEDULE[i + 1][0] if i + 1 < len(SCHEDULE) else 1.0
        load.allow(int(upto * load.total))
        began = time.monotonic()
        detail = await faults.run(step, load)
        # Progress on stdout: when a run fails or hangs, this says how far it got and where time went.
        print(
            f"soak: {step} at {len(load.ids)} creates took {time.monotonic() - began:.1f} s ({detail})",
            flush=True,
        )
    load.allow(load.total)


async def _state(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        pending = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
        tickets = await conn.fetch("SELECT id::text FROM tickets")
        # Only creates happen here, so any second row for a ticket is a double effect.
        notified = await conn.fetch("SELECT ticket_id::text, count(*) FROM notifications GROUP BY ticket_id")
    finally:
        await conn.close()
    return {
        "pending": int(pending),
        "tickets": [r[0] for r in tickets],
        "notified": {r[0]: int(r[1]) for r in notified},
    }


async def _topic(brokers: list[str], topic: str) -> list[bytes]:
    log = await KafkaTopicLog(brokers, topic).open()
    try:
        return [r.value or b"" for r in await log.read(await log.size(), within_s=120)]
    finally:
        await log.close()


@pytest.mark.timeout(420 * chaos_scale())
async def test_tickets_soak_no_loss_no_double_notification_under_broker_and_worker_kills(
    broker_proxy: TcpProxy,
    fresh_pg_dsn: str,
    redis_url: str,
    make_settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    scale = chaos_scale()
    total, outage_s = 2_000 * scale, 3.0 if scale == 1 else 10.0
    brokers = [f"127.0.0.1:{broker_proxy.port}"]
    settings = make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url, kafka_brokers=brokers)
    env = child_env(fresh_pg_dsn, brokers, tmp_path / "keel")
    relay = WorkerChild("relay", "outbox.after_send", env, tmp_path)
    consumer = WorkerChild("consumer", "consumer.after_effect", env, tmp_path)
    faults = Faults(broker_proxy, relay, consumer, outage_s)
    began = time.monotonic()
    app = build_app([SPEC], settings, run_workers=False)  # the API only: the workers are the children
    try:
        async with (
            app.router.lifespan_context(app),  # migrates the database and creates the topics first
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://tickets") as client,
        ):
            await relay.start()
            await consumer.start()
            await relay.ready()
            await consumer.ready()
            load = Load(client, f"soak-{uuid.uuid4().hex[:8]}", total)
            await asyncio.wait_for(asyncio.gather(load.run(), _drive(faults, load)), timeout=300 * scale)
        loaded_at = time.monotonic()
        created = len(load.ids)
        await eventually(
            lambda: _state(fresh_pg_dsn),
            until=lambda s: s["pending"] == 0 and len(s["notified"]) >= created,
            timeout_s=180,
            what="the outbox published and a notification per ticket",
            interval_s=1.0,  # each probe reads every row
        )
        drained_s = time.monotonic() - loaded_at
        # Both stop cleanly; counting after they stopped also catches a late second notification.
        assert await relay.stop() == 0, relay.log_tail()
        assert await consumer.stop() == 0, consumer.log_tail()
    finally:
        await relay.close()
        await consumer.close()

    state = await _state(fresh_pg_dsn)
    events = [orjson.loads(v) for v in await _topic(brokers, "tickets.events")]
    on_wire = Counter(e["payload"]["ticket_id"] for e in events if e["event_type"] == "ticket.created")
    dead = len(await _topic(brokers, "tickets.dlq"))
    ids = set(load.ids)
    lost = len(ids - state["notified"].keys())
    duplicates = sum(n - 1 for n in state["notified"].values())
    print(
        f"\ntickets soak: created {created}, lost {lost}, duplicate notifications {duplicates}, DLQ {dead}, "
        f"relay kills {relay.kills}, consumer kills {consumer.kills}, "
        f"broker blackholes {faults.blackholes} x {outage_s:.0f} s, resets {faults.resets}; "
        f"events republished {sum(on_wire.values()) - len(on_wire)}, create retries {load.retries}, "
        f"drained {drained_s:.1f} s after the last create, {time.monotonic() - began:.0f} s in all"
    )
    assert len(ids) == created >= total  # every 201 named a ticket of its own
    assert sorted(state["tickets"]) == sorted(ids)  # every 201 is a row, and nothing else is
    assert on_wire.keys() == ids  # each ticket got its event (maybe more than once on the wire)
    assert lost == 0 and duplicates == 0 and dead == 0
    assert state["notified"].keys() == ids
    assert (relay.kills, consumer.kills, faults.blackholes, faults.resets) == (3, 3, 2, 4)
