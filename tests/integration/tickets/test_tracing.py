"""POST /v1/tickets → outbox → relay → tickets.events → notifications consumer is one trace, exported
over OTLP: one server span, the relay's send span under it, the consumer's span under that, and
database client spans inside; the request's log lines carry its trace id."""

from __future__ import annotations

import uuid

import asyncpg

from keel.tickets.spec import SPEC
from tests.integration.tickets.conftest import ticket_body
from tests.support.eventually import eventually
from tests.support.otlp import assert_connected, assert_parent, traced, traceparent
from tests.support.serving import serving_app


async def _notified(dsn: str, ticket_id: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM notifications WHERE ticket_id = $1", ticket_id))
    finally:
        await conn.close()


async def test_a_ticket_is_one_trace_from_the_request_to_its_notification(
    fresh_pg_dsn, redis_url, kafka_brokers, make_settings, otlp, quick_span_export, monkeypatch
):
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    settings = traced(
        make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url, kafka_brokers=kafka_brokers), otlp
    )
    trace_id = uuid.uuid4().hex
    async with serving_app([SPEC], settings) as (_, client):
        for probe in ("/healthz", "/readyz", "/metrics"):
            await client.get(probe, headers={"traceparent": traceparent(trace_id)})
        created = await client.post(
            "/v1/tickets",
            json=ticket_body(),
            headers={"X-User-Id": "tracer", "traceparent": traceparent(trace_id)},
        )
        assert created.status_code == 201, created.text
        ticket_id = created.json()["id"]
        await eventually(
            lambda: _notified(fresh_pg_dsn, ticket_id), until=bool, timeout_s=60, what="notified"
        )
        spans = await eventually(
            lambda: otlp.trace(trace_id),
            until=lambda got: any(s.name == "process tickets.events" for s in got),
            timeout_s=30,
            what="the consumer's span exported",
        )

    servers = [s for s in spans if s.kind == "SERVER"]
    assert [s.name for s in servers] == ["POST /v1/tickets"]  # one, and none for the probes
    assert {s.service for s in spans} == {"keel-tickets"}, "the process's service.name on every span"
    assert servers[0].attributes["http.route"] == "/v1/tickets"
    assert_parent(spans, "send tickets.events", "POST /v1/tickets")
    assert_parent(spans, "process tickets.events", "send tickets.events")
    assert_connected(spans, "ab" * 8)
    process = next(s for s in spans if s.name == "process tickets.events")
    assert process.kind == "CONSUMER" and process.attributes["messaging.system"] == "kafka"
    assert process.attributes["messaging.consumer.group.name"]
    send = next(s for s in spans if s.name == "send tickets.events")
    assert send.kind == "PRODUCER" and send.attributes["messaging.message.id"]
    assert isinstance(send.attributes["messaging.kafka.offset"], int)
    # asyncpg client spans inside the request and inside the consumer's transaction.
    db = [s for s in spans if s.kind == "CLIENT" and s.attributes.get("db.system") == "postgresql"]
    by_id = {s.span_id: s for s in spans}
    assert {by_id[s.parent_id].name for s in db if s.parent_id in by_id} >= {
        "POST /v1/tickets",
        "process tickets.events",
    }


async def test_with_client_spans_off_a_trace_keeps_its_own_spans_and_no_database_or_redis_ones(
    fresh_pg_dsn, redis_url, make_settings, otlp, quick_span_export, monkeypatch
):
    monkeypatch.setenv("TICKETS_RATE_LIMIT", "")
    settings = traced(make_settings(postgres_dsn=fresh_pg_dsn, redis_url=redis_url), otlp)
    settings = settings.model_copy(update={"otel_client_spans": False})  # OTEL_CLIENT_SPANS=false
    trace_id = uuid.uuid4().hex
    async with serving_app([SPEC], settings) as (_, client):
        created = await client.post(
            "/v1/tickets",
            json=ticket_body(),
            headers={"X-User-Id": "tracer", "traceparent": traceparent(trace_id)},
        )
        assert created.status_code == 201, created.text
        spans = await eventually(
            lambda: otlp.trace(trace_id),
            until=lambda got: {"POST /v1/tickets", "process tickets.events"} <= {s.name for s in got},
            timeout_s=30,
            what="the request's and the consumer's spans exported",
        )
    assert [s for s in spans if s.kind == "CLIENT"] == []
