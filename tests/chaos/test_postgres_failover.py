"""PostgreSQL loses its primary during keyed ticket creates, and the synchronous standby is promoted,
as a failover manager would. POSTGRES_DSN names both servers with `target_session_attrs=read-write`,
so every new connection finds the writable one. The primary is lost two ways: killed (kill -9: its
port refuses at once), or gone silent (its machine lost: a proxy in front of it forwards nothing, so
every connection to it waits out its timeout, and each new one spends DB_CONNECT_TIMEOUT_S on it
before trying the standby).

What a client sees: 201, or 503 in the envelope while no primary answers (504 when its deadline ran
out on the silent one; never a 500); a retried key makes no second ticket. What the platform keeps:
every create answered 201 exists on the new primary (synchronous commit), and the API, the outbox
relay and the notifications consumer carry on without a restart — one notification per ticket."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Literal

import asyncpg
import httpx
import pytest

from keel.core.settings import Settings
from keel.tickets.spec import SPEC
from tests.chaos.conftest import chaos_scale
from tests.support.eventually import eventually
from tests.support.pg_replication import ReplicatedPostgres, replicated_postgres
from tests.support.serving import serving_app
from tests.support.tcp_proxy import TcpProxy

WRITERS = 8
RETRIED = (503, 504)  # what a client tries again with the same key


@pytest.fixture
def pg() -> Iterator[ReplicatedPostgres]:
    with replicated_postgres() as pg:
        yield pg


@pytest.fixture
async def primary(pg: ReplicatedPostgres) -> AsyncIterator[TcpProxy]:
    """A proxy in front of the primary: the address a client dials for it, until it goes silent."""
    proxy = await TcpProxy.in_front_of(pg.direct(pg.primary)).start()
    yield proxy
    await proxy.close()


async def _fetch(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


@pytest.mark.parametrize("lost", ["killed", "silent"])
async def test_a_primary_lost_during_creates_loses_no_acknowledged_ticket_and_nothing_restarts(
    lost: Literal["killed", "silent"],
    pg: ReplicatedPostgres,
    primary: TcpProxy,
    redis_url: str,
    kafka_brokers: list[str],
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")  # hundreds of creates by one user
    count = 300 * chaos_scale()
    user = f"failover-{uuid.uuid4().hex[:8]}"
    # The primary's address as the platform dials it: the server itself, or a proxy that goes silent.
    dsn = pg.dsn() if lost == "killed" else pg.dsn(primary_port=primary.port)
    # A bare database (tests.support.pg_replication): this process migrates it at start.
    settings = make_settings(
        postgres_dsn=dsn, redis_url=redis_url, kafka_brokers=kafka_brokers, migrate_on_start=True
    )
    # Read on the promoted standby itself: a silent primary still runs, with what it had.
    promoted = pg.direct(pg.standby)
    statuses: Counter[int] = Counter()
    bodies: list[str] = []
    acknowledged: dict[str, str] = {}
    first_201_after_loss: list[float] = []
    lost_at = float("inf")
    async with serving_app([SPEC], settings) as (_, client):
        queue: asyncio.Queue[str] = asyncio.Queue()
        for i in range(count):
            queue.put_nowait(f"k-{i}")

        async def create(key: str) -> httpx.Response:
            body = {"title": f"ticket {key}", "description": "during a PostgreSQL failover"}
            headers = {"X-User-Id": user, "Idempotency-Key": key}
            return await client.post("/v1/tickets", json=body, headers=headers)

        async def writer() -> None:
            while not queue.empty():
                key = queue.get_nowait()

                async def attempt(key: str = key) -> httpx.Response:
                    response = await create(key)
                    statuses[response.status_code] += 1
                    if response.status_code in RETRIED:
                        assert response.json()["error"]["code"], response.text  # the envelope
                    return response

                # A client retries a 503 or a 504 with the same key.
                response = await eventually(
                    attempt,
                    until=lambda r: r.status_code not in RETRIED,
                    timeout_s=60,
                    what=f"{key} answered",
                )
                if response.status_code != 201:
                    bodies.append(response.text)
                    continue
                acknowledged[key] = response.json()["id"]
                if time.monotonic() > lost_at and not first_201_after_loss:
                    first_201_after_loss.append(time.monotonic() - lost_at)

        writers = [asyncio.create_task(writer()) for _ in range(WRITERS)]
        await eventually(
            lambda: asyncio.sleep(0, len(acknowledged)), until=lambda n: n >= count // 3, timeout_s=60
        )
        if lost == "killed":
            pg.primary.kill()
        else:
            primary.set_mode("blackhole")
        lost_at = time.monotonic()
        pg.promote()
        promoted_s = time.monotonic() - lost_at
        await asyncio.gather(*writers)
        # The relay and the consumer came through too: one notification per ticket, in time.
        await eventually(
            lambda: _fetch(promoted, "SELECT count(*) AS n FROM notifications WHERE user_id = $1", user),
            until=lambda rows: rows[0]["n"] >= count,
            timeout_s=90,
            what="a notification per ticket",
        )
        drained_s = time.monotonic() - lost_at
    notified = await _fetch(
        promoted, "SELECT ticket_id::text AS id FROM notifications WHERE user_id = $1", user
    )
    stored = await _fetch(promoted, "SELECT id::text AS id FROM tickets WHERE created_by = $1", user)
    per_ticket = Counter(r["id"] for r in notified)
    print(
        f"\npostgres failover (primary {lost}) during {count} keyed creates ({WRITERS} writers): standby promoted "
        f"{promoted_s:.2f} s after the loss, first 201 after {first_201_after_loss[0]:.2f} s; statuses "
        f"{dict(statuses)}; tickets stored {len(stored)} of {len(acknowledged)} acknowledged; "
        f"notified {len(per_ticket)} tickets, {sum(per_ticket.values())} notifications, all in {drained_s:.1f} s"
    )
    assert not bodies, bodies[:3]
    assert set(statuses) <= ({201, 503} if lost == "killed" else {201, 503, 504})
    assert {r["id"] for r in stored} == set(acknowledged.values()) and len(acknowledged) == count
    assert set(per_ticket) == set(acknowledged.values()) and set(per_ticket.values()) == {1}
