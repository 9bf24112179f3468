"""A wrong POSTGRES_DSN stops start-up with one line saying what PostgreSQL answered and which
setting to fix: no traceback, a non-zero exit, no password printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from keel.core.errors import StartupError
from keel.core.infra import reach_postgres
from tests.support.servers import free_port


def elsewhere(dsn: str, *, database: str | None = None, port: int | None = None) -> str:
    parts = urlsplit(dsn)
    netloc = f"{parts.username or 'postgres'}:pw-not-shown@{parts.hostname}:{port or parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, f"/{database}" if database else parts.path, parts.query, ""))


def test_keel_migrate_against_a_missing_database_says_so_in_one_line(pg_dsn: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEST_")}
    env["POSTGRES_DSN"] = elsewhere(pg_dsn, database="no_such_db")
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, output
    assert len(output.splitlines()) == 1, output
    assert "no_such_db" in output and "does not exist" in output and "POSTGRES_DSN" in output
    assert "pw-not-shown" not in output


async def test_a_closed_port_is_named_with_the_setting_to_fix(pg_dsn: str) -> None:
    port = free_port()
    with pytest.raises(StartupError) as failure:
        await reach_postgres(elsewhere(pg_dsn, port=port), timeout_s=2.0)
    assert f"127.0.0.1:{port}" in str(failure.value) and "POSTGRES_DSN" in str(failure.value)
    assert "pw-not-shown" not in str(failure.value) and "\n" not in str(failure.value)


def test_a_worker_that_needs_an_unreachable_broker_stops_in_one_line_within_seconds(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "KAFKA_", "PROMETHEUS_"))}
    env |= {
        "KAFKA_BROKERS": f"127.0.0.1:{free_port()}",
        "SECRET": "s" * 32,
        "KEEL_DATA_DIR": str(tmp_path / "keel"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "keel.cli", "worker", "story", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    assert "Traceback" not in output, output
    said = [line for line in output.splitlines() if "check KAFKA_BROKERS" in line]
    assert len(said) == 1 and "producer could not start" in said[0], output


def test_orders_produce_against_an_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "KAFKA_"))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "keel.cli",
            "orders",
            "produce",
            "-n",
            "1",
            "--brokers",
            f"127.0.0.1:{free_port()}",
        ],
        env={**env, "COLUMNS": "400"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2, lines
    assert len(lines) == 1 and "check --brokers or KAFKA_BROKERS" in lines[0], lines
