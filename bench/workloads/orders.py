"""Orders workload: GET /order/{id} served from the in-process cache against a bare ASGI app
returning the same bytes (the order is written before the service starts, so its warm-up loads it)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import asyncpg
import httpx
from bench import limits, loadgen, profile
from bench.procs import free_port, keel_bin, service
from bench.report import Row, median
from bench.workloads import Context

from keel.core.schema import upgrade
from keel.orders import repository
from keel.orders.fake import fake_order
from keel.orders.schemas import Order, order_json, parse_order

# Issue 21's targets.
TARGET_RATIO, TARGET_P99_MS = 0.9, 5.0
# A fixed seed: the same order (and so the same body size) on every run.
SEED = 7
PROFILE = "profile-orders-get"


async def stored_order(ctx: Context, order_uid: str) -> Order:
    """The bench's order, written before the service starts (its warm-up loads it into the cache)."""
    order = parse_order(fake_order(random.Random(SEED), order_uid=order_uid))
    await upgrade(ctx.dsn)
    conn = await asyncpg.connect(ctx.dsn)
    try:
        await repository.upsert_orders(conn, [order_json(order)])
    finally:
        await conn.close()
    return order


class OrderGet:
    name = "orders-get"

    async def run(self, ctx: Context) -> Sequence[Row]:
        order = await stored_order(ctx, f"bench{ctx.run_id}")
        port = free_port()
        argv = [keel_bin(), "serve", "orders", "--port", str(port)]
        path = f"/order/{order['order_uid']}"
        async with service(argv, ctx.service_env(), ctx.logdir, "keel-serve-orders", port) as child:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base) as client:
                first = (await client.get(path)).raise_for_status()
            if first.headers.get("x-source") != "cache":
                raise RuntimeError(
                    f"order not served from the cache: X-Source={first.headers.get('x-source')}"
                )
            target = loadgen.Target(base, [path, "bench"], child.pid)
            figures, limit, rounds = await limits.against_bare_asgi(
                ctx.cfg, ctx.logdir, target, first.content
            )
            if ctx.cfg.profile:
                title = "GET /order/{id} from cache (keel serve orders)"
                ctx.notes.append(
                    await profile.record(ctx, child, base, "get", [path, "bench"], title, PROFILE)
                )
        return [
            Row(
                f"GET /order/{{id}} from cache ({len(first.content):,} B), 32 conns, vs bare ASGI",
                median(figures),
                limit,
                "req/s",
                TARGET_RATIO,
                TARGET_P99_MS,
                note=f"the service and the bare app measured in turns; {rounds}",
            )
        ]
