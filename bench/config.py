"""How long and how hard the bench runs: one typed object, read once from the environment.

The defaults keep `make bench` to a few minutes on a 2-core machine; BENCH_* variables shorten a run
while developing (e.g. BENCH_DURATION_S=2 BENCH_RUNS=1) without touching the code."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# Load generators run on this core (taskset), the servers under test share the others: on 2 cores the
# generator then cannot steal the server's CPU, and the limit runs get the same handicap.
DEFAULT_LOADGEN_CPU = "1"


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class BenchConfig:
    # Seconds per measured run; the issue asks for a fixed duration, short enough to repeat.
    duration_s: float = field(default_factory=lambda: _env_float("BENCH_DURATION_S", 5))
    # Seconds of load before measuring: fills pools, prepares statements, warms caches and the JIT-less
    # interpreter's dict caches; discarded.
    warmup_s: float = field(default_factory=lambda: _env_float("BENCH_WARMUP_S", 2))
    # The median of this many runs is reported (the issue asks for >= 3).
    runs: int = field(default_factory=lambda: _env_int("BENCH_RUNS", 3))
    # The client count for the HTTP and pgbench workloads.
    connections: int = field(default_factory=lambda: _env_int("BENCH_CONNECTIONS", 32))
    loadgen_cpu: str = field(default_factory=lambda: os.environ.get("BENCH_LOADGEN_CPU", DEFAULT_LOADGEN_CPU))
    # A server to make the scratch database on; unset: a private one (the embedded wheel's, on loopback).
    admin_dsn: str | None = field(default_factory=lambda: os.environ.get("BENCH_POSTGRES_DSN") or None)
    # Events per broker run: sized so one run of the slowest path (per-message consumer) takes seconds.
    broker_events: int = field(default_factory=lambda: _env_int("BENCH_BROKER_EVENTS", 20_000))
    # The writer rate for the relay-lag workload.
    lag_write_rate: int = field(default_factory=lambda: _env_int("BENCH_LAG_WRITE_RATE", 5_000))
    # The burst of confirmed routes for the cityguide workload.
    cityguide_routes: int = field(default_factory=lambda: _env_int("BENCH_CITYGUIDE_ROUTES", 1_000))
    only: tuple[str, ...] = field(
        default_factory=lambda: tuple(w for w in os.environ.get("BENCH_ONLY", "").split(",") if w)
    )
    profile: bool = field(default_factory=lambda: os.environ.get("BENCH_PROFILE", "1") != "0")
