"""`keel up` as a newcomer runs it twice: one platform per data folder (a second on the same folder
stops at once naming the first), a taken port refused in one line before anything starts, absolute
links to its own address, `/health` beside `/healthz` (seed 003), its lines never cut at 80 columns
when its output goes to a file, Ctrl-C (SIGINT) stopping it with exit 0 and no traceback, and, with
nothing configured, its own PostgreSQL under the data folder keeping what it stored across restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port, wait_for_port

# A refusal comes before PostgreSQL, migrations or services (~2 s here: the interpreter and imports);
# the bound only keeps a hang from holding the suite, with room for two busy xdist workers.
REFUSAL_S = 60


@dataclass
class Running:
    base: str
    port: int
    pid: int
    data: Path
    log: Path
    env: dict[str, str]
    cwd: Path


def _env(dsn: str, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SECRET", "KAFKA_", "TEST_", "KEEL_"))}
    for name in ("PUBLIC_BASE_URL", "COLUMNS"):  # COLUMNS would widen rich's console: left at its 80
        env.pop(name, None)
    return env | {"POSTGRES_DSN": dsn, "KEEL_DATA_DIR": str(data), "TTS_MODE": "instant"}


def _keel_up(running: Running, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", "up", *args],
        env=running.env,
        cwd=running.cwd,
        capture_output=True,
        text=True,
        timeout=REFUSAL_S,
    )


@pytest.fixture(scope="module")
def first_keel_up(pg_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("keel-up")
    port, data, log = free_port(), tmp / "data", tmp / "up.log"
    env = _env(pg_dsn, data)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "keel.cli", "up", "--port", str(port)],
            env=env,
            cwd=tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, deadline_s=180)
        assert proc.poll() is None, log.read_text()[-3000:]
        yield Running(f"http://127.0.0.1:{port}", port, proc.pid, data, log, env, tmp)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.timeout(300)
def test_a_second_keel_up_on_the_same_data_folder_refuses_at_once_naming_the_first(first_keel_up):
    began = time.monotonic()
    second = _keel_up(first_keel_up, "--port", str(free_port()))
    took = time.monotonic() - began
    line = _one_line(second)
    assert second.returncode == 2, line
    assert f"pid {first_keel_up.pid} on {first_keel_up.base}" in line and "--data-dir" in line, line
    print(f"\nsecond keel up, same data folder: exit {second.returncode} in {took:.1f}s: {line}")


@pytest.mark.timeout(300)
def test_a_taken_port_fails_in_one_line_before_anything_starts(first_keel_up, tmp_path):
    own = tmp_path / "own-folder"
    began = time.monotonic()
    taken = _keel_up(first_keel_up, "--port", str(first_keel_up.port), "--data-dir", str(own))
    took = time.monotonic() - began
    line = _one_line(taken)
    assert taken.returncode == 2, line
    assert f"127.0.0.1:{first_keel_up.port} is already in use" in line and "--port" in line, line
    # Its own folder passed the lock; nothing else was started in it (no PostgreSQL, no secret).
    assert sorted(p.name for p in own.iterdir()) == ["keel-up.lock"]
    print(f"\nkeel up on a taken port: exit {taken.returncode} in {took:.1f}s: {line}")


@pytest.mark.timeout(300)
def test_keel_up_hands_out_links_to_its_own_address_and_answers_health(first_keel_up):
    base = first_keel_up.base
    user = {"X-User-Id": "newcomer"}
    with httpx.Client(base_url=base, timeout=30) as client:
        ticket = client.post(
            "/v1/tickets", json={"title": "First hour", "description": "Hello."}, headers=user
        )
        attachment = client.post(
            f"/v1/tickets/{ticket.json()['id']}/attachments", files={"file": ("a.txt", b"hi")}, headers=user
        )
        health, healthz = client.get("/health"), client.get("/healthz")
        download = client.get(attachment.json()["download_url"])
    assert attachment.status_code == 201, attachment.text
    assert attachment.json()["download_url"].startswith(f"{base}/files/")
    assert download.status_code == 200 and download.content == b"hi"
    assert health.status_code == healthz.status_code == 200 and health.json() == healthz.json()


@pytest.mark.timeout(300)
def test_keel_up_lines_are_not_cut_at_80_columns_in_a_log_file(first_keel_up):
    lines = first_keel_up.log.read_text().splitlines()
    base = first_keel_up.base
    expected = f"  docs {base}/docs   health {base}/healthz {base}/readyz   metrics {base}/metrics"
    assert len(expected) > 80
    assert expected in lines, lines[:20]


@pytest.mark.timeout(300)
def test_ctrl_c_stops_keel_up_cleanly_with_exit_0(pg_dsn: str, tmp_path: Path) -> None:
    port, data, log = free_port(), tmp_path / "data", tmp_path / "up.log"
    env = _env(pg_dsn, data)
    argv = [sys.executable, "-m", "keel.cli", "up", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, deadline_s=180)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        status = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    output = log.read_text()
    assert status == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    with pytest.raises(TimeoutError):
        wait_for_port(port, deadline_s=0.5)  # nothing listens any more


@pytest.mark.timeout(600)
def test_with_nothing_configured_keel_up_runs_on_its_own_postgresql_and_keeps_the_data(
    tmp_path: Path,
) -> None:
    """`make run` on a fresh machine: no POSTGRES_DSN, so the embedded PostgreSQL under the data folder;
    what a first run stored is there after a restart."""
    data = tmp_path / "data"
    env = {k: v for k, v in _env("", data).items() if k != "POSTGRES_DSN"}
    user = {"X-User-Id": "newcomer"}

    def run_once(check: Callable[[httpx.Client], None]) -> str:
        port, log = free_port(), tmp_path / f"up-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "keel.cli", "up", "--port", str(port)]
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, deadline_s=300)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                check(client)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        return log.read_text()

    def create(client: httpx.Client) -> None:
        assert client.get("/readyz").json()["checks"]["postgres"] == "ok"
        created = client.post(
            "/v1/tickets", json={"title": "Kept across restarts", "description": "."}, headers=user
        )
        assert created.status_code == 201, created.text

    def still_there(client: httpx.Client) -> None:
        listed = client.get("/v1/tickets", headers=user)
        assert [t["title"] for t in listed.json()] == ["Kept across restarts"], listed.text

    first = run_once(create)
    assert "embedded PostgreSQL running" in first, first[-3000:]
    assert (data / "pg").is_dir(), "its files under the data folder"
    run_once(still_there)
