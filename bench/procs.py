"""The processes and databases a bench run owns: a scratch database per run, the service under test
as its own OS process, and the private Redis and broker (never the shared Redis keyspace)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from tests.support import servers

from keel.core.db import libpq_dsn
from keel.core.schema import upgrade

# A service is ready when /healthz answers; migrations on a fresh database take a few seconds.
READY_DEADLINE_S = 60.0


@dataclass
class Child:
    """A process we started; stopped by its own pid, never by name."""

    proc: subprocess.Popen[bytes]
    port: int
    argv: Sequence[str]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


free_port = servers.free_port


def command_text(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """A command as a reader would type it; scratch names are shown as placeholders by the caller."""
    prefix = " ".join(f"{k}={v!r}" if v == "" else f"{k}={v}" for k, v in (env or {}).items())
    return f"{prefix} {' '.join(argv)}".strip()


def spawn(argv: Sequence[str], env: Mapping[str, str], logdir: Path, name: str, port: int) -> Child:
    log = logdir / f"{name}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    full_env.update(env)
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=logdir)
    return Child(proc, port, argv, log)


async def wait_healthy(child: Child, path: str = "/healthz") -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise RuntimeError(
                    f"{child.argv[0]} exited early; see {child.log}:\n{child.log.read_text()[-2000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{child.port}{path}", timeout=1)).status_code < 500:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{child.argv} not healthy after {READY_DEADLINE_S}s; see {child.log}")


@contextlib.asynccontextmanager
async def service(
    argv: Sequence[str], env: Mapping[str, str], logdir: Path, name: str, port: int, health: str = "/healthz"
) -> AsyncIterator[Child]:
    child = spawn(argv, env, logdir, name, port)
    try:
        await wait_healthy(child, health)
        yield child
    finally:
        child.stop()


def keel_bin() -> str:
    return str(Path(sys.executable).parent / "keel")


@contextlib.contextmanager
def postgres_server(admin_dsn: str | None) -> Iterator[str]:
    """BENCH_POSTGRES_DSN's server, or one of our own: the embedded wheel's PostgreSQL on a loopback
    port, as the tests run it (machines of the project start no PostgreSQL of their own)."""
    if admin_dsn:
        yield admin_dsn
        return
    with servers.running(servers.postgres_server()) as server:
        yield f"postgresql://postgres@127.0.0.1:{server.port}/postgres"


@contextlib.asynccontextmanager
async def scratch_database(admin_dsn: str) -> AsyncIterator[str]:
    """A database of its own for this run on the server, migrated as a release is (`keel migrate`
    before the services start: they do not migrate at start), dropped afterwards."""
    name = f"keel_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(libpq_dsn(admin_dsn))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            dsn = libpq_dsn(admin_dsn).rsplit("/", 1)[0] + f"/{name}"
            await upgrade(dsn)
            yield dsn
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own: the bench writes ~100k idempotency keys a run, and the machine's Redis
    is shared (never flushed, never filled by us)."""
    with servers.running(servers.redis_server()) as server:
        yield f"redis://127.0.0.1:{server.port}/0"


@contextlib.contextmanager
def private_broker() -> Iterator[str]:
    with servers.running(servers.kafka_broker()) as server:
        yield f"127.0.0.1:{server.port}"


def require_tool(
    name: str, apt_package: str | None = None, find: Callable[[], str | None] | None = None
) -> str:
    """The tool's path (`find` locates it, else PATH); installs it with apt-get when missing and we
    may, as CI's script does: without starting the system-wide server a package may bring."""
    locate = find or (lambda: shutil.which(name))
    found = locate()
    if found:
        return found
    if apt_package and shutil.which("apt-get") and os.geteuid() == 0:
        # policy-rc.d exiting 101: a package's service (pgbouncer's) must not start system-wide.
        policy = Path("/usr/sbin/policy-rc.d")
        placed = not policy.exists()
        if placed:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        try:
            subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", apt_package],
                check=True,
                stdout=subprocess.DEVNULL,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        finally:
            if placed:
                policy.unlink()
        found = locate()
    if not found:
        raise RuntimeError(f"{name} is needed for the bench: install {apt_package or name}")
    return found


def pinned(argv: Sequence[str], cpu: str) -> list[str]:
    """Run a load generator on one core, when taskset exists and the machine has more than one."""
    if cpu and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", cpu, *argv]
    return list(argv)
