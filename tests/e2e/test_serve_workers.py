"""The ticket API as deployed for load: `keel serve tickets --api-only --workers 2` (two HTTP processes
on one port, no relay or consumer) beside `keel worker tickets`. Creates land on both processes, every
`/metrics` scrape (whichever process answers) counts all of them, and the events stay in the outbox
until the worker process relays them and its consumer writes the notifications."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.parser import text_string_to_metric_families

from tests.support.eventually import eventually
from tests.support.servers import free_port

CREATES = 40
START_TIMEOUT_S = 60


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "keel.cli", *argv], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


@pytest.fixture
def env(fresh_pg_dsn: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "PROMETHEUS_"))}
    (tmp_path / "metrics").mkdir()  # prometheus-client's contract: the directory exists
    (tmp_path / "metrics" / "counter_1.db").write_bytes(b"")  # left by an earlier run: wiped at start
    return {
        **clean,
        "POSTGRES_DSN": fresh_pg_dsn,
        "REDIS_URL": redis_url,
        "TICKETS_RATE_LIMIT": "",
        "SECRET": f"e2e-{uuid.uuid4().hex}",  # `keel serve`/`keel worker` refuse the default
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }


@contextmanager
def two_workers(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = _start(
        ["serve", "tickets", "--api-only", "--workers", "2", "--port", str(port)], env, tmp_path / "api.log"
    )
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        assert _stop(proc) == 0, (tmp_path / "api.log").read_text()[-3000:]


@pytest.fixture
def api(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with two_workers(env, tmp_path) as served:
        yield served


@pytest.fixture
def api_own_metrics_dir(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Without PROMETHEUS_MULTIPROC_DIR: the parent makes a private directory, removed at exit."""
    with two_workers({k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}, tmp_path) as served:
        yield served


def _posts_201(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "http_requests_total"
        and s.labels == {"method": "POST", "route": "/v1/tickets", "status": "201"}
    )


def _samples(text: str) -> dict[str, float]:
    """Unlabelled samples by name (the process and pool figures)."""
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


def _creates_per_process(directory: Path, tmp_path: Path) -> dict[int, float]:
    """Each worker's own count, read from its files alone (prometheus-client's reader, one pid at a time)."""
    counts: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        alone = tmp_path / f"pid-{pid}"
        alone.mkdir(exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(alone))
        counts[pid] = _posts_201(generate_latest(registry).decode())
    return counts


async def test_two_api_processes_share_the_port_and_their_metrics_and_the_worker_relays_their_events(
    api: tuple[str, subprocess.Popen[bytes]], env: dict[str, str], fresh_pg_dsn: str, tmp_path: Path
):
    base, parent = api
    user = f"user-{uuid.uuid4().hex[:8]}"

    async def ready() -> int:
        assert parent.poll() is None, (tmp_path / "api.log").read_text()[-3000:]
        try:
            async with httpx.AsyncClient() as probe:
                return (await probe.get(f"{base}/readyz")).status_code
        except httpx.TransportError:
            return 0

    await eventually(ready, until=lambda s: s == 200, timeout_s=START_TIMEOUT_S, what="API ready")
    # One process answering /readyz says nothing of the other: wait until both have started.
    await eventually(
        lambda: (tmp_path / "api.log").read_text().count("keel tickets started"),
        until=lambda n: n >= 2,
        timeout_s=START_TIMEOUT_S,
        what="both API processes started",
    )
    for i in range(CREATES):
        # A connection per request, so the kernel hands each to whichever process accepts first.
        async with httpx.AsyncClient(base_url=base) as client:
            response = await client.post(
                "/v1/tickets",
                json={"title": f"Printer on fire {i}", "description": "Third floor."},
                headers={"X-User-Id": user, "Idempotency-Key": f"k-{i}"},
            )
            assert response.status_code == 201, response.text

    # A request is counted just after its response has gone out: the last one may still be counting.
    per_process = await eventually(
        lambda: _creates_per_process(Path(env["PROMETHEUS_MULTIPROC_DIR"]), tmp_path),
        until=lambda counts: sum(counts.values()) == CREATES,
        timeout_s=10,
        what=f"{CREATES} creates counted",
    )
    assert len([n for n in per_process.values() if n]) == 2, per_process  # both processes served
    for _ in range(6):  # whichever process answers the scrape reports the sum
        async with httpx.AsyncClient(base_url=base) as scraper:
            assert _posts_201((await scraper.get("/metrics")).text) == CREATES

    async def process_figures() -> dict[str, float]:
        async with httpx.AsyncClient(base_url=base) as scraper:
            return _samples((await scraper.get("/metrics")).text)

    # Every worker writes its process_* figures each second; the scrape sums them.
    figures = await eventually(
        process_figures,
        until=lambda f: f.get("process_workers") == 2,
        timeout_s=10,
        what="process metrics of both workers",
    )
    assert figures["process_resident_memory_bytes"] > 2 * 20_000_000  # two interpreters, each > 20 MB
    assert figures["process_cpu_seconds_total"] > 0 and figures["process_open_fds"] > 0
    assert figures["db_pool_size"] == 2 * 32  # DB_POOL_SIZE per process, summed

    conn = await asyncpg.connect(fresh_pg_dsn)
    try:
        # --api-only: no relay in the API processes, the events wait in the outbox.
        assert await conn.fetchval("SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == CREATES
        worker = _start(["worker", "tickets", "--port", str(free_port())], env, tmp_path / "worker.log")
        try:
            await eventually(
                lambda: conn.fetchval("SELECT count(*) FROM notifications"),
                until=lambda n: n == CREATES,
                timeout_s=START_TIMEOUT_S,
                what="notifications written by the worker process",
            )
            assert await conn.fetchval("SELECT count(*) FROM outbox_events WHERE published_at IS NULL") == 0
        finally:
            assert _stop(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        await conn.close()


async def test_a_worker_process_that_dies_is_replaced_and_the_port_keeps_answering(
    api_own_metrics_dir: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
):
    base, parent = api_own_metrics_dir

    async def workers() -> list[psutil.Process]:
        assert parent.poll() is None, (tmp_path / "api.log").read_text()[-3000:]
        return psutil.Process(parent.pid).children()

    async def healthy_workers() -> set[int]:
        try:
            async with httpx.AsyncClient(base_url=base) as probe:
                if (await probe.get("/healthz")).status_code != 200:
                    return set()
        except httpx.TransportError:
            return set()
        return {p.pid for p in await workers()}

    first = await eventually(
        healthy_workers, until=lambda pids: len(pids) == 2, timeout_s=START_TIMEOUT_S, what="two workers"
    )
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    replaced = await eventually(
        healthy_workers,
        until=lambda pids: len(pids) == 2 and victim not in pids,
        timeout_s=START_TIMEOUT_S,
        what="the killed worker replaced",
    )
    assert len(replaced & first) == 1  # the other worker served on throughout
    for _ in range(10):  # a connection per request: whichever worker accepts it answers
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/healthz")).status_code == 200

    # No PROMETHEUS_MULTIPROC_DIR given: the workers share a private directory the parent made, and a
    # scrape sums the two live ones (the killed worker's live gauges were dropped with it).
    [shared] = {Path(p.environ()["PROMETHEUS_MULTIPROC_DIR"]) for p in await workers()}
    assert shared.name.startswith("keel-metrics-") and list(shared.glob("*.db"))

    async def live_workers() -> float | None:
        async with httpx.AsyncClient(base_url=base) as scraper:
            return _samples((await scraper.get("/metrics")).text).get("process_workers")

    await eventually(
        live_workers, until=lambda n: n == 2, timeout_s=10, what="two live workers in the metrics"
    )
