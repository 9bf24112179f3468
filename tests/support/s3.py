"""An S3-compatible server on loopback (moto's): S3 and MinIO are outside our system, so a real S3
protocol peer stands in for them. One server per module; a fresh bucket per test."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.servers import free_port, wait_for_port

S3_KEY, S3_SECRET = "moto-key", "moto-secret"


@contextmanager
def moto_server(logdir: Path) -> Iterator[str]:
    """The server's endpoint, `http://127.0.0.1:<port>`."""
    port = free_port()
    with (logdir / "moto.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, 60)
        endpoint = f"http://127.0.0.1:{port}"
        # moto loads its S3 backend on the first call: make that here, with a loaded machine's
        # patience, so no test's own timeout pays for it.
        httpx.get(endpoint, timeout=60).raise_for_status()
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


async def fresh_bucket(endpoint: str) -> dict[str, str]:
    """Settings values for a new bucket on the server (moto accepts the unsigned create)."""
    bucket = f"keel-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.put(f"{endpoint}/{bucket}")).status_code == 200
    return {
        "s3_endpoint_url": endpoint,
        "s3_bucket": bucket,
        "s3_access_key_id": S3_KEY,
        "s3_secret_access_key": S3_SECRET,
    }
