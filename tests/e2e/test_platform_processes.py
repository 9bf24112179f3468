"""The whole platform as production runs it: every service its own OS process (`keel serve` /
`keel worker`) against one PostgreSQL, Redis and Kafka-protocol broker. The demo's four flows run at
once against them and all end green; the processes' own metrics then show that the only HTTP they
served was this test's, so the cityguide workflow crossed orchestrator → story → tts → delivery
through the broker and the database alone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from keel.cityguide import topics
from keel.demo.scenario import run_all
from keel.demo.targets import Targets
from tests.support.eventually import eventually
from tests.support.servers import free_port

# name → the keel command line that runs it (its port is appended)
PROCESSES = {
    "tickets": ["serve", "tickets"],
    "orders": ["serve", "orders"],
    "videos": ["serve", "videos"],
    "orchestrator": ["serve", "orchestrator"],
    "delivery": ["serve", "delivery-prefetch"],
    "story": ["worker", "story"],
    "tts": ["worker", "tts"],
}
START_TIMEOUT_S = 60
FLOW_TIMEOUT_S = 90


@dataclass
class Process:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return f"----- {self.name} (pid {self.proc.pid}, rc {self.proc.poll()}) -----\n" + "\n".join(text)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _env(dsn: str, redis_url: str, brokers: list[str], data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "POSTGRES_DSN": dsn,
        "REDIS_URL": redis_url,
        "KAFKA_BROKERS": ",".join(brokers),
        "KAFKA_IDEMPOTENCE": "false",
        "SECRET": "e2e-platform-secret",
        "KEEL_DATA_DIR": str(data_dir),  # object storage: TTS writes the audio that delivery serves
        "TTS_MODE": "instant",
        "LOG_LEVEL": "INFO",
        # Redis outlives the database: ids restart at 1 in a fresh one, so the cache must be new too.
        "VIDEOS_CACHE_NAME": f"videos-e2e-{uuid.uuid4().hex[:8]}",
    }


@pytest.fixture
def platform(
    fresh_pg_dsn: str, redis_url: str, kafka_brokers: list[str], tmp_path: Path
) -> Iterator[dict[str, Process]]:
    env = _env(fresh_pg_dsn, redis_url, kafka_brokers, tmp_path / "data")
    started: dict[str, Process] = {}
    try:
        for name, argv in PROCESSES.items():
            port, log = free_port(), tmp_path / f"{name}.log"
            command = [sys.executable, "-m", "keel.cli", *argv, "--host", "127.0.0.1", "--port", str(port)]
            with log.open("wb") as out:
                proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            started[name] = Process(name, port, proc, log)
        yield started
    finally:
        for process in started.values():
            process.stop()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, Counter[int]]]:
    """The test's one HTTP client, counting the responses it got from each port."""
    answered: Counter[int] = Counter()

    async def count(response: httpx.Response) -> None:
        answered[urlsplit(str(response.request.url)).port or 80] += 1

    async with httpx.AsyncClient(timeout=10.0, event_hooks={"response": [count]}) as c:
        yield c, answered


async def _ready(client: httpx.AsyncClient, process: Process) -> None:
    async def probe() -> int:
        assert process.proc.poll() is None, f"{process.name} exited\n{process.tail()}"
        try:
            return (await client.get(f"{process.url}/readyz")).status_code
        except httpx.TransportError:
            return 0

    await eventually(probe, until=lambda s: s == 200, timeout_s=START_TIMEOUT_S, what=f"{process.name} ready")


async def _metrics(process: Process) -> dict[str, list[tuple[dict[str, str], float]]]:
    # A client of its own, so scraping is not counted among the test's requests.
    async with httpx.AsyncClient(timeout=10.0) as scraper:
        text = (await scraper.get(f"{process.url}/metrics")).text
    return {
        family.name: [(s.labels, s.value) for s in family.samples if s.name.endswith("_total")]
        for family in text_string_to_metric_families(text)
    }


def _served(metrics: dict[str, list[tuple[dict[str, str], float]]]) -> int:
    return int(sum(v for labels, v in metrics.get("http_requests", []) if labels["route"] != "/metrics"))


def _consumed(metrics: dict[str, list[tuple[dict[str, str], float]]]) -> set[str]:
    return {labels["topic"] for labels, v in metrics.get("events_consumed", []) if v > 0}


async def test_five_services_as_seven_processes_run_every_demo_flow_through_broker_and_database(
    platform: dict[str, Process],
    client: tuple[httpx.AsyncClient, Counter[int]],
    kafka_brokers: list[str],
) -> None:
    http, answered = client
    try:
        await asyncio.gather(*(_ready(http, p) for p in platform.values()))
        targets = Targets(
            tickets=platform["tickets"].url,
            orders=platform["orders"].url,
            videos=platform["videos"].url,
            orchestrator=platform["orchestrator"].url,
            delivery=platform["delivery"].url,
            brokers=kafka_brokers,
        )
        results = await run_all(http, targets, timeout_s=FLOW_TIMEOUT_S)

        assert [(r.name, r.status, r.detail) for r in results] == [
            (name, "ok", "") for name in ("cityguide", "tickets", "orders", "videos")
        ]
        assert len({p.proc.pid for p in platform.values()}) == len(PROCESSES)
        assert all(p.proc.poll() is None for p in platform.values()), "a process died during the demo"

        metrics = {name: await _metrics(p) for name, p in platform.items()}
        # Every request a process served came from this test: none of them called another over HTTP.
        assert {n: _served(m) for n, m in metrics.items()} == {
            n: answered[p.port] for n, p in platform.items()
        }
        # The workers' only HTTP was the readiness probe, yet each did its part of the route's work.
        assert _consumed(metrics["orchestrator"]) >= {topics.ROUTE_CONFIRMED, topics.STORY_GENERATED}
        assert topics.STORY_GENERATE in _consumed(metrics["story"])
        assert topics.TTS_REQUESTED in _consumed(metrics["tts"])
        assert topics.TTS_COMPLETED in _consumed(metrics["delivery"])
        assert "orders" in _consumed(metrics["orders"])
    except BaseException:
        for process in platform.values():
            print(process.tail())
        raise
