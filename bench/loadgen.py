"""HTTP load with wrk (one thread pinned to the load-generator core), parsed from the Lua report line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from bench.config import BenchConfig
from bench.procs import pinned, require_tool
from bench.report import Sample

LUA = Path(__file__).parent / "lua"
# One wrk thread drives every connection: a second thread would need the core the server runs on.
WRK_THREADS = 1
# A request slower than this counts as a timeout error, not as a latency sample.
WRK_TIMEOUT = "5s"


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    non2xx: int


def script(name: str) -> Path:
    """The workload's Lua with the shared report hook appended (wrk takes one script file)."""
    # Per process: two bench runs at once must not rewrite each other's script mid-run.
    path = Path(tempfile.gettempdir()) / f"keel-bench-{os.getpid()}-{name}.lua"
    path.write_text((LUA / f"{name}.lua").read_text() + "\n" + (LUA / "report.lua").read_text())
    return path


def wrk_argv(cfg: BenchConfig, url: str, lua: str, args: Sequence[str], seconds: float) -> list[str]:
    argv = [
        require_tool("wrk", "wrk"),
        f"-t{WRK_THREADS}",
        f"-c{cfg.connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={WRK_TIMEOUT}",
        "-s",
        str(script(lua)),
        url,
        "--",
        *args,
    ]
    return pinned(argv, cfg.loadgen_cpu)


async def wrk(cfg: BenchConfig, url: str, lua: str, args: Sequence[str], seconds: float) -> WrkResult:
    argv = wrk_argv(cfg, url, lua, args, seconds)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    text = out.decode()
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {shlex.join(argv)}\n{text}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    return WrkResult(
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=data["socket_errors"],
        non2xx=data["non2xx"],
    )


def shown(argv: Sequence[str]) -> str:
    """The wrk command as printed in the table: the temp script shown by its source name."""
    text = shlex.join(argv).replace(f"{tempfile.gettempdir()}/keel-bench-{os.getpid()}-", "bench/lua/")
    return re.sub(r"Bearer [\w.-]+", "Bearer <token>", text)


def cpu_seconds(pid: int | None) -> float:
    """CPU of the server process and its live children (`keel serve --workers N` serves from children)."""
    if pid is None:
        return 0.0
    parent = psutil.Process(pid)
    total = 0.0
    for process in (parent, *parent.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


@dataclass(frozen=True)
class Target:
    """One server of an interleaved comparison and the wrk arguments it is driven with."""

    url: str
    args: Sequence[str]
    server_pid: int | None = None


# Rounds of a comparison in turns, at least: on this machine one run moves by up to a third, so
# three rounds leave a ratio's median at the mercy of one slow minute.
INTERLEAVED_ROUNDS = 5


async def measure_interleaved(cfg: BenchConfig, lua: str, targets: Sequence[Target]) -> list[list[Sample]]:
    """Servers compared on this noisy machine: each warmed up, then rounds (`cfg.runs`, at least
    INTERLEAVED_ROUNDS) of one run per server in turn, so a slow minute of the machine falls on all of
    them alike (run back to back, a row could move by a third between its figure and its limit). One
    list of samples per target, in round order (report.per_round pairs them)."""
    for target in targets:
        await wrk(cfg, target.url, lua, list(target.args), cfg.warmup_s)
    samples: list[list[Sample]] = [[] for _ in targets]
    for _ in range(max(cfg.runs, INTERLEAVED_ROUNDS)):
        for i, target in enumerate(targets):
            sample, _ = await _one_run(cfg, target.url, lua, list(target.args), target.server_pid)
            samples[i].append(sample)
    return samples


async def _one_run(
    cfg: BenchConfig,
    url: str,
    lua: str,
    args: list[str],
    server_pid: int | None,
    shown_args: list[str] | None = None,
) -> tuple[Sample, WrkResult]:
    cpu_before = cpu_seconds(server_pid)
    result = await wrk(cfg, url, lua, args, cfg.duration_s)
    cpu = cpu_seconds(server_pid) - cpu_before
    requests = result.rps * max(1, round(cfg.duration_s))
    cpu_ms = cpu / requests * 1000 if server_pid is not None and requests else None
    if result.errors or result.non2xx:
        raise RuntimeError(f"{url}: {result.errors} socket errors, {result.non2xx} non-2xx responses")
    argv = wrk_argv(cfg, url, lua, shown_args or args, cfg.duration_s)
    return Sample(result.rps, shown(argv), result.p99_ms, cpu_ms), result


async def measure(
    cfg: BenchConfig,
    url: str,
    lua: str,
    args: Sequence[str],
    *,
    fresh_args: bool = False,
    server_pid: int | None = None,
) -> tuple[list[Sample], list[WrkResult]]:
    """Warm up, then `cfg.runs` runs of `cfg.duration_s`. With `fresh_args`, args[0] is replaced by a new
    run id each time (unique idempotency keys across runs). With `server_pid`, each sample also carries
    the server's CPU time per request."""

    def run_args() -> list[str]:
        return [uuid.uuid4().hex[:12], *args[1:]] if fresh_args else list(args)

    await wrk(cfg, url, lua, run_args(), cfg.warmup_s)
    samples, results = [], []
    for _ in range(cfg.runs):
        a = run_args()
        shown_args = ["<run-id>", *a[1:]] if fresh_args else a
        sample, result = await _one_run(cfg, url, lua, a, server_pid, shown_args)
        samples.append(sample)
        results.append(result)
    return samples, results
