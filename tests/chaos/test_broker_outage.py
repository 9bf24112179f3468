"""The broker cut off on the wire while tickets keep coming: the outbox grows, `outbox_lag_seconds`
shows it, and when the broker is reachable again the backlog drains to exactly one notification
per ticket with nothing in tickets.dlq.

The broker stays up (the test broker keeps no data across a restart); a fault proxy in front of
it, which the broker advertises, blackholes then resets every connection, as a partition that
ends with the peers' connections torn down looks to the clients."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from keel.core.runtime import build_app
from keel.tickets.spec import SPEC
from tests.chaos.conftest import chaos_scale
from tests.support.eventually import eventually
from tests.support.tcp_proxy import TcpProxy
from tests.support.topic_log import KafkaTopicLog

LAG = re.compile(rb"^outbox_lag_seconds (\S+)$", re.MULTILINE)


async def _lag(client: httpx.AsyncClient) -> float:
    found = LAG.search((await client.get("/metrics")).content)
    return float(found.group(1)) if found else 0.0


async def _db_counts(dsn: str, user: str) -> tuple[int, list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        pending = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE published_at IS NULL")
        rows = await conn.fetch("SELECT ticket_id::text FROM notifications WHERE user_id = $1", user)
    finally:
        await conn.close()
    return int(pending), [r[0] for r in rows]


async def _create(client: httpx.AsyncClient, user: str, count: int) -> list[str]:
    ids: list[str] = []
    for start in range(0, count, 50):
        responses = await asyncio.gather(
            *(
                client.post(
                    "/v1/tickets",
                    json={"title": f"ticket {i}", "description": "Broker outage."},
                    headers={"X-User-Id": user},
                )
                for i in range(start, min(count, start + 50))
            )
        )
        assert {r.status_code for r in responses} == {201}, {r.status_code for r in responses}
        ids += [r.json()["id"] for r in responses]
    return ids


async def test_broker_outage_grows_the_outbox_then_drains_to_one_notification_each(
    broker_proxy: TcpProxy,
    fresh_pg_dsn: str,
    redis_url: str,
    make_settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    scale = chaos_scale()
    per_phase, outage_s = 100 * scale, 3.0 if scale == 1 else 10.0
    brokers = [f"127.0.0.1:{broker_proxy.port}"]
    settings = make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url, kafka_brokers=brokers)
    user = f"broker-{uuid.uuid4().hex[:8]}"
    app = build_app([SPEC], settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://tickets") as client,
    ):
        ids = await _create(client, user, per_phase)
        await eventually(
            lambda: _db_counts(fresh_pg_dsn, user),
            until=lambda c: len(c[1]) == len(ids),
            timeout_s=60,
            what="notifications before the outage",
        )

        broker_proxy.set_mode("blackhole")
        cut_at = time.monotonic()
        during = await _create(client, user, per_phase)  # the API does not need the broker
        ids += during
        pending, _ = await eventually(
            lambda: _db_counts(fresh_pg_dsn, user), until=lambda c: c[0] >= len(during), what="outbox backlog"
        )
        peak_lag = await eventually(
            lambda: _lag(client), until=lambda lag: lag >= outage_s * 0.5, timeout_s=outage_s + 5, what="lag"
        )
        await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - cut_at)))  # the outage lasts outage_s
        peak_lag = max(peak_lag, await _lag(client))
        broker_proxy.set_mode("reset")
        broker_proxy.set_mode("pass")
        back_at = time.monotonic()

        _, notified = await eventually(
            lambda: _db_counts(fresh_pg_dsn, user),
            until=lambda c: c[0] == 0 and len(c[1]) >= len(ids),
            timeout_s=90,
            what="the backlog drained and notified",
        )
        drained_s = time.monotonic() - back_at
        lag_after = await eventually(
            lambda: _lag(client), until=lambda lag: lag < 1.0, timeout_s=10, what="lag"
        )

    dlq = await KafkaTopicLog(brokers, "tickets.dlq").open()
    try:
        dead = await dlq.size()
    finally:
        await dlq.close()
    lost = len(set(ids) - set(notified))
    duplicates = len(notified) - len(set(notified))
    print(
        f"\nbroker blackhole {outage_s:.0f} s then reset: outbox grew to {pending} pending, "
        f"outbox_lag_seconds peaked at {peak_lag:.1f} s; drained in {drained_s:.1f} s after the broker came back "
        f"(lag now {lag_after:.1f} s); tickets lost {lost} / {len(ids):,}; duplicate notifications {duplicates}; "
        f"tickets.dlq {dead}"
    )
    assert lost == 0 and duplicates == 0 and dead == 0
    assert sorted(notified) == sorted(ids)


async def test_a_service_started_while_the_broker_is_away_serves_and_drains_once_it_returns(
    broker_proxy: TcpProxy,
    fresh_pg_dsn: str,
    redis_url: str,
    make_settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    brokers = [f"127.0.0.1:{broker_proxy.port}"]
    settings = make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url, kafka_brokers=brokers)
    user = f"late-broker-{uuid.uuid4().hex[:8]}"
    broker_proxy.set_mode("refuse")
    app = build_app([SPEC], settings)
    started_at = time.monotonic()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://tickets") as client,
    ):
        started_s = time.monotonic() - started_at
        ids = await _create(client, user, 50 * chaos_scale())
        pending, _ = await eventually(
            lambda: _db_counts(fresh_pg_dsn, user), until=lambda c: c[0] >= len(ids), what="outbox backlog"
        )
        broker_proxy.set_mode("pass")
        back_at = time.monotonic()
        _, notified = await eventually(
            lambda: _db_counts(fresh_pg_dsn, user),
            until=lambda c: c[0] == 0 and len(c[1]) >= len(ids),
            timeout_s=90,
            what="the backlog drained and notified",
        )
    print(
        f"\nbroker refused at start: the service started in {started_s:.1f} s and took {len(ids)} creates "
        f"({pending} pending in the outbox); drained and notified {time.monotonic() - back_at:.1f} s after the "
        f"broker came back; duplicates {len(notified) - len(set(notified))}"
    )
    assert sorted(notified) == sorted(ids)
