"""What a TTS request costs the worker in process: `TtsWorker.on_requested` in the instant mode (as
the cityguide burst row runs it) over the story worker's own texts (3 to 5 a route), in batches of the
worker's size; the audio stored in a local directory, as `keel worker tts` stores it by default, and
the results published onto the in-memory bus (the broker's share is what bench.tts_burst adds,
served). Every round asks for new audio, as a burst does. CPU of the whole process per request
(`resource.getrusage`: the object store's threads included), per round.

Served, the worker's figure moves by 2x with the VM's phase; in process it moves far less, so a
change to the TTS path is weighed here first.

Run: .venv/bin/python -m bench.tts_path [--routes 300] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvloop

from keel.cityguide import topics
from keel.cityguide.publisher import Publisher
from keel.cityguide.story.generator import compose
from keel.cityguide.tts.service import TtsWorker
from keel.cityguide.tts.spec import BATCH_SIZE, _instant
from keel.core.bus.memory import MemoryBus
from keel.core.events import Event
from keel.core.settings import Settings
from keel.core.storage import build_object_store


def story_requests(tag: str, routes: int) -> list[tuple[str, dict[str, Any]]]:
    """(route id, tts.requested payload) for the stories of `routes` walks, as the orchestrator asks."""
    return [
        (
            route,
            {
                "route_id": route,
                "story_id": story["story_id"],
                "text": story["text"],
                "position": position,
                "lang": "ru",
            },
        )
        for route in (f"{tag}-{n}" for n in range(routes))
        for position, story in enumerate(compose(route, {"mode": "walk"}))
    ]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


WARM_UP_ROUNDS = 2  # the allocator's heap and the directory settle: the first rounds cost more


async def measure(routes: int, rounds: int, directory: Path) -> list[float]:
    """µs of CPU per request, one figure per round after the warm-up."""
    bus = MemoryBus(retain=100)
    producer = bus.producer()
    await producer.start()
    store = build_object_store(Settings(_env_file=None, object_store_dir=directory))  # type: ignore[call-arg]
    worker = TtsWorker(Publisher(producer), store, _instant, inline=True)
    figures = []
    for round_ in range(WARM_UP_ROUNDS + rounds):
        events = [
            Event(topics.TTS_REQUESTED, payload, key=route)
            for route, payload in story_requests(f"r{round_}", routes)
        ]
        started = cpu_s()
        for first in range(0, len(events), BATCH_SIZE):
            await worker.on_requested(events[first : first + BATCH_SIZE])
        if round_ >= WARM_UP_ROUNDS:
            figures.append((cpu_s() - started) / len(events) * 1e6)
        await asyncio.sleep(0)
    await producer.stop()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--routes", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-tts-path-") as directory:
        figures = uvloop.run(measure(args.routes, args.rounds, Path(directory)))
    rounds = ", ".join(f"{f:,.0f}" for f in figures)
    print(
        f"TTS request in process (instant mode, local store): {statistics.median(figures):,.0f} µs CPU median ({rounds})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
