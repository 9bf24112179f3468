"""Restartable worker processes for the tickets soak. Each life is a fresh
`tests.support.tickets_worker_process`, stopped with SIGTERM or armed with a crash point.

The next life is spawned ahead (warm: imported, waiting on stdin), so a restart does not wait for
Python to start — seconds on a loaded machine, which would otherwise dominate the run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.eventually import eventually
from tests.support.tickets_worker_process import GO, READY

ROOT = Path(__file__).resolve().parents[2]
CRASH_EXIT = 137  # keel.core.faults.crash_point exits like `kill -9`


@dataclass
class _Life:
    proc: asyncio.subprocess.Process
    log: Path
    armed: bool


class WorkerChild:
    def __init__(self, kind: str, crash_point: str, env: dict[str, str], log_dir: Path) -> None:
        self.kind = kind
        self.crash_point = crash_point
        self.lives = 0
        self.kills = 0  # deaths at the crash point
        self._env = {k: v for k, v in env.items() if k != "KEEL_CRASH_POINTS"}
        self._log_dir = log_dir
        self._spawned = 0
        self._life: _Life | None = None
        self._warm: _Life | None = None

    async def start(self, *, armed: bool = False) -> None:
        """Run the next life (the warm one when it is armed as asked), then warm up the one after."""
        assert self._life is None or self._life.proc.returncode is not None, f"{self.kind} is running"
        if self._warm is not None and self._warm.armed == armed:
            life, self._warm = self._warm, None
        else:
            life = await self._spawn(armed)
        assert life.proc.stdin is not None
        life.proc.stdin.write(GO)
        await life.proc.stdin.drain()
        self._life = life
        self.lives += 1
        if self._warm is None:
            self._warm = await self._spawn(not armed)

    async def crash(self, nudge: Callable[[], Awaitable[None]], deadline_s: float = 180.0) -> str:
        """Stop the running life cleanly, run one armed with the crash point, see it die there, and
        restart unarmed. `nudge` is called each second it runs alive (to give it work to act on).
        Returns where the time went."""
        began = time.monotonic()
        assert await self.stop() == 0, self.log_tail()
        stopped = time.monotonic()
        await self.start(armed=True)
        await self.ready()
        started = time.monotonic()
        while (code := await self._wait(1.0)) is None:
            assert time.monotonic() - started < deadline_s, f"{self.kind} never reached {self.crash_point}"
            await nudge()
        assert code == CRASH_EXIT, f"{self.kind} exited {code}, not at {self.crash_point}:\n{self.log_tail()}"
        self.kills += 1
        died = time.monotonic()
        await self.start()
        return (
            f"stop {stopped - began:.1f} s, armed life ready {started - stopped:.1f} s, "
            f"at {self.crash_point} {died - started:.1f} s later"
        )

    async def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (a clean stop) once it is ready; SIGKILL if it has not exited after `timeout_s`."""
        life = self._running()
        await self.ready()
        if life.proc.returncode is None:
            life.proc.send_signal(signal.SIGTERM)
            if await self._wait(timeout_s) is None:
                life.proc.kill()
                await life.proc.wait()
                raise AssertionError(f"{self.kind} did not stop within {timeout_s}s:\n{self.log_tail()}")
        assert life.proc.returncode is not None
        return life.proc.returncode

    async def close(self) -> None:
        for life in (self._life, self._warm):
            if life is not None and life.proc.returncode is None:
                life.proc.kill()
                await life.proc.wait()

    def log_tail(self, chars: int = 2000) -> str:
        return self._running().log.read_text(errors="replace")[-chars:]

    def _running(self) -> _Life:
        assert self._life is not None, f"{self.kind} was never started"
        return self._life

    async def _spawn(self, armed: bool) -> _Life:
        self._spawned += 1
        env = dict(self._env)
        if armed:
            env["KEEL_CRASH_POINTS"] = self.crash_point
        log = self._log_dir / f"{self.kind}-{self._spawned}{'-armed' if armed else ''}.log"
        # A file, not a pipe: nobody reads a pipe while the child runs, and a full one would block it.
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.support.tickets_worker_process",
                self.kind,
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=out,
                stderr=out,
            )
        return _Life(proc, log, armed)

    async def ready(self, timeout_s: float = 120.0) -> None:
        """Wait until the running life handles SIGTERM (or has exited)."""
        life = self._running()
        await eventually(
            lambda: life.proc.returncode is not None or READY.encode() in life.log.read_bytes(),
            until=bool,
            timeout_s=timeout_s,
            what=f"{self.kind} ready",
            interval_s=0.1,
        )

    async def _wait(self, timeout_s: float) -> int | None:
        """The running life's exit code, or None while it still runs after `timeout_s`."""
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self._running().proc.wait(), timeout_s)
        return None


def child_env(dsn: str, brokers: list[str], data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "POSTGRES_DSN": dsn,
        "KAFKA_BROKERS": ",".join(brokers),
        "KAFKA_IDEMPOTENCE": "false",  # the test broker refuses the idempotent producer
        "KEEL_DATA_DIR": str(data_dir),
    }
