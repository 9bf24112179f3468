"""The operator API on the embedded platform (`keel up`'s in-memory bus): dead letters listed,
shown, replayed with a fixed payload; lag; the workflows list; and the one access rule."""

from __future__ import annotations

import httpx
import orjson

from keel.core.bus import OutgoingMessage
from keel.ops.records import Selection
from keel.ops.session import OpsRefused, RemoteSession
from keel.ops.spec import SPEC as CONSOLE
from keel.orders.fake import fake_order
from keel.orders.spec import SPEC as ORDERS
from tests.integration.orders.conftest import served
from tests.support.eventually import eventually
from tests.support.serving import serving_app


async def test_a_poison_order_is_replayed_through_the_api_with_its_payload_fixed(
    make_settings, fresh_pg_dsn, rng
):
    order = fake_order(rng)
    async with serving_app([ORDERS, CONSOLE], make_settings(postgres_dsn=fresh_pg_dsn), embedded=True) as (
        app,
        client,
    ):
        producer = app.state.dev_producer
        broken = {**order, "sm_id": "ninety-nine"}
        await producer.send(OutgoingMessage("orders", orjson.dumps(broken), key=order["order_uid"].encode()))
        listed = await eventually(
            lambda: client.get("/ops/dlq"),
            until=lambda r: r.status_code == 200 and _topic(r.json(), "orders.dlq")["pending"] == 1,
            timeout_s=10,
            what="the poison order pending",
        )
        [record] = (
            await client.get("/ops/dlq/orders.dlq/records", params={"reason": "PoisonMessage"})
        ).json()
        shown = await client.get(f"/ops/dlq/records/{record['id']}")
        empty = await client.post("/ops/dlq/orders.dlq/replay", json={})
        replay = await client.post(
            "/ops/dlq/orders.dlq/replay",
            json={"ids": [record["id"]], "payload": orjson.dumps(order).decode()},
        )
        response = await served(client, order["order_uid"], timeout_s=10)
        again = await client.post("/ops/dlq/orders.dlq/replay", json={"ids": [record["id"]]})
        audit = (await client.get("/ops/audit")).json()
        # The consumer commits just after the effect: its lag reaches 0 a moment after the order is served.
        lag = (
            await eventually(
                lambda: client.get("/ops/lag"),
                until=lambda r: _caught_up(r.json()["consumers"], "order-svc"),
                timeout_s=10,
                what="order-svc caught up",
            )
        ).json()
        workflows = await client.get("/ops/workflows", params={"status": "failed"})
        unknown = await client.get("/ops/workflows/no-such-route")
        openapi = (await client.get("/openapi.json")).json()

    summary = _topic(listed.json(), "orders.dlq")
    assert summary["by_reason"] == {"PoisonMessage": 1} and summary["by_source_topic"] == {"orders": 1}
    assert "sm_id" in shown.json()["error"] and orjson.loads(shown.json()["payload"]) == broken
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "validation_error"
    assert (replay.json()["count"], again.json()["count"], again.json()["skipped"]) == (1, 0, 1)
    assert orjson.loads(response.content) == order
    assert [(a["action"], a["records"], a["actor"]) for a in audit] == [("replay", 1, "operator@127.0.0.1")]
    assert {(c["topic"], c["end"]) for c in lag["consumers"] if c["group"] == "order-svc" and c["end"]} == {
        ("orders", 2)  # the poison order and its replay, on the order's partition
    }
    assert workflows.status_code == 200 and workflows.json() == []
    assert unknown.status_code == 404
    assert {"/ops/dlq", "/ops/workflows", "/ops/lag", "/ops/dlq/{topic}/replay"} <= set(openapi["paths"])


async def test_the_console_admits_operators_only(make_settings, fresh_pg_dsn):
    """Under `keel up` a caller on this machine is an operator; elsewhere, and under `keel serve`, the
    caller needs the `operator` role, believed from a trusted proxy only."""
    settings = make_settings(postgres_dsn=fresh_pg_dsn, trusted_proxies=["10.9.0.0/16"])
    alice = {"X-User-Id": "alice", "X-User-Roles": "operator"}
    async with serving_app([CONSOLE], settings, embedded=True) as (app, _):
        remote = httpx.AsyncClient(
            transport=httpx.ASGITransport(app, client=("10.1.2.3", 4000)), base_url="http://k"
        )
        async with remote:
            anonymous = await remote.get("/ops/dlq")
            page = await remote.get("/ops/", headers={"X-User-Id": "alice"})
            claimed_role = await remote.get("/ops/dlq", headers=alice)
    async with serving_app([CONSOLE], settings) as (app, client):
        served_alone = await client.get("/ops/workflows", headers={"X-User-Id": "alice"})
        gateway = httpx.AsyncClient(
            transport=httpx.ASGITransport(app, client=("10.9.0.1", 4000)), base_url="http://k"
        )
        async with gateway:
            through_gateway = await gateway.get("/ops/workflows", headers=alice)

    assert anonymous.status_code == 401
    for response in (page, claimed_role, served_alone):
        assert response.status_code == 403
        assert set(response.json()["error"]) == {"code", "message", "request_id"}
    assert "operator" in served_alone.json()["error"]["message"]
    assert through_gateway.status_code == 200


async def test_keel_dlq_base_url_mode_drives_the_same_operations_through_the_api(make_settings, fresh_pg_dsn):
    """What `keel dlq --base-url` sends (keel.ops.session.RemoteSession), against `keel up`'s memory bus."""
    async with serving_app([ORDERS, CONSOLE], make_settings(postgres_dsn=fresh_pg_dsn), embedded=True) as (
        app,
        client,
    ):
        headers = (("dlq-error-type", b"Boom"), ("dlq-original-topic", b"orders"))
        letter = OutgoingMessage("orders.dlq", b"{}", key=b"k", headers=headers)
        await app.state.dev_producer.send_many([letter, letter])
        remote = RemoteSession(client)
        summaries = await remote.summaries()
        counted = await remote.count("orders.dlq", Selection(reason="Boom"))
        [first, _] = (await client.get("/ops/dlq/orders.dlq/records")).json()
        shown = await remote.show(first["id"])
        purged = await remote.purge("orders.dlq", Selection(ids=frozenset({first["id"]})), delete=False)
        try:
            await remote.show("orders.dlq/0/99")
            refused = ""
        except OpsRefused as exc:
            refused = str(exc)
        replayed = await remote.replay("orders.dlq", Selection(), None, None)  # --all

    assert _topic(summaries, "orders.dlq")["by_reason"] == {"Boom": 2} and counted == 2
    assert shown["reason"] == "Boom" and shown["payload"] == "{}"
    assert (purged["count"], replayed["count"]) == (1, 1)
    assert refused.startswith("404 not_found")


def _topic(summaries: list[dict], topic: str) -> dict:
    return next(s for s in summaries if s["topic"] == topic)


def _caught_up(consumers: list[dict], group: str) -> bool:
    mine = [c for c in consumers if c["group"] == group]
    return bool(mine) and sum(c["end"] for c in mine) == 2 and all(c["lag"] == 0 for c in mine)
