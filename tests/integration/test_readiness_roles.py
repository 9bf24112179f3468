"""/readyz tells the truth about the broker, by the process's role.

A `keel worker` process exists to relay and consume: when its clients cannot produce or consume it
answers 503 naming Kafka. An API process keeps answering 200 while the broker is away (its outbox
holds the events) but says `degraded`, with the reason, and dependency_up{dependency="kafka"} reads 0.
A broker that answers pings but grants no producer id (Tansu, a real Kafka-protocol broker without
idempotent producers) is caught too, and the log says once, in one line, what to set."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from keel.core.metrics import DEPENDENCY_UP
from keel.core.outbox import OutboxRelay
from keel.core.runtime import build_app
from keel.core.settings import Settings
from keel.tickets.spec import SPEC
from tests.support import servers
from tests.support.eventually import eventually


@asynccontextmanager
async def process(settings: Settings, *, worker: bool) -> AsyncIterator[httpx.AsyncClient]:
    """The tickets service as `keel worker` (no routes, workers) or as an API-only process."""
    app = build_app([SPEC], settings, serve_routes=not worker, run_workers=worker)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://tickets") as client,
    ):
        yield client


@pytest.fixture
def tansu() -> Iterator[str]:
    with servers.running(servers.tansu_broker()) as broker:
        yield f"127.0.0.1:{broker.port}"


def settings_for(make_settings: Callable[..., Settings], pg_dsn: str, redis_url: str, **kw: Any) -> Settings:
    return make_settings(postgres_dsn=pg_dsn, redis_url=redis_url, kafka_timeout_s=2.0, **kw)


async def test_a_worker_whose_broker_grants_no_producer_id_is_not_ready_and_says_what_to_set(
    tansu: str,
    pg_dsn: str,
    redis_url: str,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="keel.bus")
    settings = settings_for(make_settings, pg_dsn, redis_url, kafka_brokers=[tansu], kafka_idempotence=True)
    async with process(settings, worker=True) as client:
        # The relay's producer retries its start; each try waits KAFKA_TIMEOUT_S for a producer id.
        ready = await eventually(
            lambda: client.get("/readyz"), until=lambda r: r.status_code == 503, timeout_s=20, what="503"
        )
        assert "kafka" in ready.json()["error"]["message"]
        assert "KAFKA_IDEMPOTENCE=false" in ready.json()["error"]["details"]["checks"]["kafka"]
        relay = next(w for w in client._transport.app.state.supervisor.workers if isinstance(w, OutboxRelay))  # type: ignore[attr-defined]
        await eventually(
            lambda: relay._failures, until=lambda n: n >= 3, timeout_s=20, what="3 failed starts"
        )
    # Three starts have failed, and the log said so once, in one line.
    told = [r for r in caplog.records if "KAFKA_IDEMPOTENCE=false" in r.getMessage()]
    assert len(told) == 1 and "\n" not in told[0].getMessage()


async def test_the_same_worker_with_idempotence_off_is_ready(
    tansu: str, pg_dsn: str, redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = settings_for(make_settings, pg_dsn, redis_url, kafka_brokers=[tansu], kafka_idempotence=False)
    async with process(settings, worker=True) as client:
        ready = await eventually(
            lambda: client.get("/readyz"), until=lambda r: r.status_code == 200, timeout_s=20, what="200"
        )
        assert ready.json()["status"] == "ready"


async def test_broker_away_an_api_process_is_degraded_and_a_worker_is_not_ready(
    pg_dsn: str, redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    nowhere = f"127.0.0.1:{servers.free_port()}"
    settings = settings_for(make_settings, pg_dsn, redis_url, kafka_brokers=[nowhere])
    async with process(settings, worker=False) as api:
        answer = await api.get("/readyz")
        assert answer.status_code == 200
        assert answer.json()["status"] == "degraded" and answer.json()["degraded"] == ["kafka"]
        assert answer.json()["checks"]["postgres"] == "ok"
        assert DEPENDENCY_UP.labels("kafka")._value.get() == 0
        created = await api.post(
            "/v1/tickets", json={"title": "Broker away", "description": "kept"}, headers={"X-User-Id": "u1"}
        )
        assert created.status_code == 201, created.text
    async with process(settings, worker=True) as worker:
        answer = await worker.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["error"]["message"] == "dependency down: kafka"


async def test_dependency_up_is_on_the_metrics_without_anyone_asking_readyz(
    pg_dsn: str, redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    """The DependencyDown alert and the dashboard read `/metrics`, and the deployments' health checks
    ask `/healthz`: the dependencies are probed in the background, not only when `/readyz` is asked."""
    nowhere = f"127.0.0.1:{servers.free_port()}"
    settings = settings_for(make_settings, pg_dsn, redis_url, kafka_brokers=[nowhere])
    DEPENDENCY_UP.clear()  # nothing left from an earlier /readyz in this process
    async with process(settings, worker=False) as api:
        scraped = await eventually(
            lambda: api.get("/metrics"),
            until=lambda r: 'dependency_up{dependency="kafka"} 0.0' in r.text,
            timeout_s=20,
            what="every dependency on the metrics",
        )
    assert 'dependency_up{dependency="postgres"} 1.0' in scraped.text
    assert 'dependency_up{dependency="redis"} 1.0' in scraped.text
