"""Cityguide flow timing: routes confirmed at once, each run to completion by the four services in one
process (memory bus, a scratch database on --dsn), with real eSpeak speech or TTS_MODE=instant.

Prints routes/s, route → first audio (the orchestrator's histogram input) and route → completed, and
eSpeak's real-time factor (seconds of speech per second of synthesis).

Run: .venv/bin/python -m bench.cityguide_bench [--routes 20] [--instant] [--dsn postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from keel.cityguide import topics
from keel.cityguide.delivery.spec import SPEC as DELIVERY
from keel.cityguide.orchestrator.spec import SPEC as ORCHESTRATOR
from keel.cityguide.story.spec import SPEC as STORY
from keel.cityguide.tts.espeak import Espeak
from keel.cityguide.tts.spec import SPEC as TTS
from keel.cityguide.tts.wav import duration_s
from keel.core.events import Event, encode
from keel.core.runtime import build_app
from keel.core.settings import Settings


def espeak_rtf(samples: int = 10) -> float:
    engine = Espeak()
    engine.synthesize("Разогрев.", "ru")
    spoken = spent = 0.0
    for n in range(samples):
        started = time.perf_counter()
        pcm, rate = engine.synthesize(f"Перед вами старый мост номер {n}, ему больше двухсот лет.", "ru")
        spent += time.perf_counter() - started
        spoken += duration_s(pcm, rate)
    return spoken / spent


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def run(routes: int, dsn: str) -> None:
    name = f"keel_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = dsn.rsplit("/", 1)[0]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings.model_validate({"postgres_dsn": f"{base}/{name}", "data_dir": Path(tmp)})
            app = build_app([ORCHESTRATOR, DELIVERY, STORY, TTS], settings, embedded=True)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://b") as client,
            ):
                ids = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(routes)]
                producer = app.state.infra.bus.producer()
                await producer.start()
                started = time.perf_counter()
                await producer.send_many(
                    [
                        encode(
                            Event(topics.ROUTE_CONFIRMED, {"route_id": r, "mode": "walk"}, key=r),
                            topics.ROUTE_CONFIRMED,
                            "bare",
                        )
                        for r in ids
                    ]
                )
                await producer.stop()
                pending = set(ids)
                while pending:
                    for r in list(pending):
                        if (await client.get(f"/workflows/{r}")).json().get("status") == "completed":
                            pending.discard(r)
                    await asyncio.sleep(0.05)
                wall = time.perf_counter() - started
                first, done, stories = [], [], 0
                for r in ids:
                    w = (await client.get(f"/workflows/{r}")).json()
                    stories += len(w["jobs"])
                    confirmed = _ts(w["confirmed_at"])
                    first.append(_ts(w["first_audio_at"]) - confirmed)
                    done.append(_ts(w["completed_at"]) - confirmed)
        print(
            f"routes {routes}  stories {stories}  wall {wall:.2f} s  ->  {routes / wall:.1f} routes/s, "
            f"{stories / wall:.1f} stories/s"
        )
        print(f"route -> first audio  p50 {pct(first, 50):.2f} s  p95 {pct(first, 95):.2f} s")
        print(f"route -> completed    p50 {pct(done, 50):.2f} s  p95 {pct(done, 95):.2f} s")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--routes", type=int, default=20)
    parser.add_argument("--instant", action="store_true", help="TTS_MODE=instant (silence, no synthesis)")
    parser.add_argument(
        "--dsn", default=os.environ.get("TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    args = parser.parse_args()
    if args.instant:
        os.environ["TTS_MODE"] = "instant"
    else:
        print(f"eSpeak real-time factor: {espeak_rtf():.0f}x (seconds of speech per second of synthesis)")
    asyncio.run(run(args.routes, args.dsn))


if __name__ == "__main__":
    main()
