"""The TTS worker alone under a burst: `keel worker tts` (TTS_MODE=instant, no database)
on a private Apache Kafka, the stories of N routes asked for at once, rounds until every tts.completed is
seen; CPU of the worker process (user and system: the audio's file writes are most of the latter)
per request.

The worker is the largest share of the cityguide burst row's CPU per route (a route asks for 3 to 5
stories); this isolates it from the orchestrator and the other workers, which compete for the same
two cores there.

Run: .venv/bin/python -m bench.tts_burst [--routes 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from bench.procs import free_port, keel_bin, private_broker, service
from bench.tts_path import story_requests

from keel.cityguide import topics

DEADLINE_S = 120.0


def cpu(pid: int) -> tuple[float, float]:
    times = psutil.Process(pid).cpu_times()
    return times.user, times.system


async def send(producer: AIOKafkaProducer, routes: int, tag: str) -> int:
    """The stories of `routes` walks (the story worker's own texts, 3 to 5 a route), each asked for
    as the orchestrator asks; returns how many requests went."""
    pending = [
        await producer.send(topics.TTS_REQUESTED, orjson.dumps(payload), key=route.encode())
        for route, payload in story_requests(tag, routes)
    ]
    await asyncio.gather(*pending)
    return len(pending)


async def completed(consumer: AIOKafkaConsumer, count: int, tag: str) -> int:
    seen, began, marker = 0, time.monotonic(), tag.encode()
    while seen < count and time.monotonic() - began < DEADLINE_S:
        for records in (await consumer.getmany(timeout_ms=500)).values():
            seen += sum(1 for record in records if record.value is not None and marker in record.value)
    return seen


async def run(routes: int, rounds: int) -> int:
    with private_broker() as brokers, tempfile.TemporaryDirectory(prefix="keel-tts-burst-") as tmp:
        env = {
            "KAFKA_BROKERS": brokers,
            "TTS_MODE": "instant",
            "DATA_DIR": tmp,
            "SECRET": f"tts-burst-{uuid.uuid4().hex}",
        }
        port = free_port()
        argv = [keel_bin(), "worker", "tts", "--port", str(port)]
        async with service(argv, env, Path(tmp), "tts", port) as child:
            producer = AIOKafkaProducer(bootstrap_servers=brokers, linger_ms=5, enable_idempotence=True)
            consumer = AIOKafkaConsumer(
                topics.TTS_COMPLETED,
                bootstrap_servers=brokers,
                group_id=f"tts-burst-{uuid.uuid4().hex}",
                auto_offset_reset="latest",
            )
            await producer.start()
            await consumer.start()
            try:
                await completed(consumer, await send(producer, 2, "warm"), "warm")
                figures = []
                for round_ in range(rounds):
                    tag = f"burst{round_}-{uuid.uuid4().hex[:8]}"
                    user, system = cpu(child.proc.pid)
                    began = time.monotonic()
                    requests = await send(producer, routes, tag)
                    seen = await completed(consumer, requests, tag)
                    elapsed = time.monotonic() - began
                    await asyncio.sleep(1.0)  # the last acks and offset commits
                    user2, system2 = cpu(child.proc.pid)
                    per = (user2 - user + system2 - system) / requests * 1e3
                    figures.append(per)
                    print(
                        f"round {round_ + 1}: {seen:,}/{requests:,} in {elapsed:.1f} s; worker CPU {per:.3f} ms "
                        f"per request (user {(user2 - user) / requests * 1e3:.3f}, system "
                        f"{(system2 - system) / requests * 1e3:.3f})",
                        flush=True,
                    )
                    if seen < requests:
                        return 1
                print(
                    f"median {statistics.median(figures):.3f} ms CPU per request ({requests / routes:.1f} a route)"
                )
            finally:
                await consumer.stop()
                await producer.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--routes", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    return asyncio.run(run(args.routes, args.rounds))


if __name__ == "__main__":
    sys.exit(main())
