"""`keel demo` against the embedded platform (`keel up`: every service in one process, memory bus,
no broker): every flow ends green — the dev bus door stands in for a console producer."""

from __future__ import annotations

import httpx

from keel import services
from keel.core.runtime import build_app
from keel.demo.scenario import run_all
from keel.demo.targets import Targets


async def test_demo_against_keel_up_ends_with_every_flow_green(fresh_pg_dsn, make_settings, monkeypatch):
    monkeypatch.setenv("TTS_MODE", "instant")
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    app = build_app(services.load_all(), make_settings(postgres_dsn=fresh_pg_dsn), embedded=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://platform") as client,
    ):
        results = await run_all(client, Targets.single("http://platform"), timeout_s=60)
    print(*(f"{r.name}: {r.status} in {r.elapsed_s:.1f}s ({len(r.steps)} steps)" for r in results), sep="\n")
    assert [(r.name, r.status, r.detail) for r in results] == [
        (name, "ok", "") for name in ("cityguide", "tickets", "orders", "videos")
    ]


async def test_dev_bus_door_refuses_unknown_topics_and_exists_only_under_keel_up(fresh_pg_dsn, make_settings):
    from keel.tickets.spec import SPEC

    settings = make_settings(postgres_dsn=fresh_pg_dsn)
    embedded = build_app([SPEC], settings, embedded=True)
    served = build_app([SPEC], settings)
    async with embedded.router.lifespan_context(embedded), served.router.lifespan_context(served):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(embedded), base_url="http://t") as client:
            unknown = await client.post("/_dev/bus/not-a-topic", content=b"{}")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(served), base_url="http://t") as client:
            absent = await client.post("/_dev/bus/tickets.events", content=b"{}")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert absent.status_code == 404  # `keel serve` has no such door: the broker is the door there
