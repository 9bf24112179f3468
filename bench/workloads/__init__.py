"""The bench's workloads: each measures one hot path and its limit in the same run and returns rows.

Adding a workload = one module with a class that has a `name` and an async `run(ctx)`, listed in
WORKLOADS. PLANNED lists the issue's workloads whose services have not landed yet: they print as
rows with their target, so the table always shows what is still unmeasured."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.config import BenchConfig
from bench.report import Row


@dataclass
class Context:
    """What one bench run shares: settings, the scratch database, the private Redis and broker."""

    cfg: BenchConfig
    dsn: str
    redis_url: str
    brokers: str
    logdir: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    # The production default (idempotent producer, acks=all) wherever the broker grants producer ids:
    # Apache Kafka does; the Tansu stand-in does not.
    idempotence: bool = True
    # Pids of the ticket service while it is under load, for the profiler and the memory probe.
    notes: list[str] = field(default_factory=list)

    def service_env(self) -> dict[str, str]:
        """`keel serve` against the bench's servers: no rate limit (it would cap the load at 100/s per
        user), no broker (memory bus), so the HTTP path is what is measured."""
        return {
            "POSTGRES_DSN": self.dsn,
            "REDIS_URL": self.redis_url,
            "TICKETS_RATE_LIMIT": "",
            "SECRET": f"bench-{self.run_id}-{uuid.uuid4().hex}",  # `keel serve` refuses the default
        }

    def broker_env(self) -> dict[str, str]:
        """`service_env` on the bench's broker, with the producer's idempotence as this run grants it."""
        return {
            **self.service_env(),
            "KAFKA_BROKERS": self.brokers,
            "KAFKA_IDEMPOTENCE": str(self.idempotence).lower(),
        }


class Workload(Protocol):
    name: str

    async def run(self, ctx: Context) -> Sequence[Row]: ...


def planned(name: str, target: str, note: str) -> Row:
    return Row(name, None, None, "", None, note=note, text="not measured yet", target_text=target)


def all_workloads() -> list[Workload]:
    # Imported here so that `bench.workloads` stays importable without the services' dependencies.
    from bench.workloads.broker import ConsumerWorkload, RelayWorkload
    from bench.workloads.cityguide import CityguideBurst
    from bench.workloads.delivery import DeliveryPrefetch
    from bench.workloads.ingest import OrderIngest
    from bench.workloads.memory import MemoryWorkload
    from bench.workloads.orders import OrderGet
    from bench.workloads.production import ProductionConfig
    from bench.workloads.scale import ScaleOut
    from bench.workloads.tickets import TicketCreate, TicketCreatePgBouncer, TicketList

    return [
        TicketCreate(),
        TicketCreatePgBouncer(),
        TicketList(),
        OrderGet(),
        ProductionConfig(),
        ScaleOut(),
        DeliveryPrefetch(),
        RelayWorkload(),
        ConsumerWorkload(),
        OrderIngest(),
        CityguideBurst(),
        MemoryWorkload(),
    ]


# The measurements made apart from `make bench`: quoted from their own results file.
SOAK_TITLE = "`keel up` RSS over a 10-minute soak"


def last_soak(path: Path) -> Row:
    """The newest run in bench/results/soak.md (written by `make soak`, 11 minutes on its own)."""
    note = "measured apart: `make soak` (11 min) → bench/results/soak.md"
    sections = path.read_text().split("\n## ")[1:] if path.exists() else []
    rows = (
        [line for line in sections[-1].splitlines() if line.startswith("| ") and "MiB" in line]
        if sections
        else []
    )
    if not rows:
        return planned(SOAK_TITLE, "growth ≤ 10 %", note)
    start, peak, end, growth, _, met, load = (cell.strip() for cell in rows[0].strip("|").split("|"))
    when = sections[-1].splitlines()[0].split(" · 2 cores")[0]
    text = f"{start} → {end} (peak {peak}), {growth}; {load} (run of {when})"
    return Row(
        SOAK_TITLE,
        None,
        None,
        "",
        None,
        note=note,
        text=text,
        met_override=met == "yes",
        target_text="growth ≤ 10 %",
    )


PLANNED: list[Row] = []
