"""How the platform wires the TTS worker: one consumer, a producer, object storage, the speech engine."""

from __future__ import annotations

from keel.cityguide import topics
from keel.cityguide.publisher import Publisher
from keel.cityguide.tts.espeak import Espeak
from keel.cityguide.tts.service import FailureInjection, Synthesize, TtsWorker, urgency
from keel.cityguide.tts.settings import TtsSettings
from keel.cityguide.tts.wav import Pcm, silence_for
from keel.cityguide.workers import command_worker, no_routes, started_producer
from keel.core.infra import Infra
from keel.core.service import ServiceSpec, Wiring

GROUP = "tts"
# Requests per batch (per partition): the most urgent (lowest story position) among the next LOOKAHEAD
# fetched, so under a backlog every route's first story is spoken before the routes' later ones (in
# offset order, a burst of routes had each first audio wait behind the earlier routes' whole lists).
# A small batch lets first stories that arrive meanwhile in soon; a redelivered batch redoes at most
# this many.
BATCH_SIZE = 100
LOOKAHEAD = 1_000
SILENCE_RATE = 22_050


def _instant(text: str, _voice: str) -> tuple[Pcm, int]:
    return silence_for(text, SILENCE_RATE), SILENCE_RATE


def _engine(settings: TtsSettings) -> Synthesize:
    return _instant if settings.tts_mode == "instant" else Espeak().synthesize


async def wire(infra: Infra) -> Wiring:
    settings = TtsSettings()
    producer = await started_producer(infra)
    worker = TtsWorker(
        Publisher(producer),
        infra.storage,
        _engine(settings),
        voice=settings.tts_voice,
        failures=FailureInjection(settings.tts_fail_stories, settings.tts_fail_attempts),
        inline=settings.tts_mode == "instant",
    )
    return command_worker(
        infra,
        producer,
        group=GROUP,
        topic=topics.TTS_REQUESTED,
        handle=worker.on_requested,
        batch_size=BATCH_SIZE,
        priority=urgency,
        lookahead=LOOKAHEAD,
    )


SPEC = ServiceSpec(
    name="tts",
    title="Cityguide TTS worker",
    routers=no_routes,
    wire=wire,
    topics=(topics.TTS_REQUESTED, topics.TTS_COMPLETED, topics.DLQ),
    uses_database=False,
    description="Turns `tts.requested` into Russian speech (eSpeak NG, 22,050 Hz 16-bit mono WAV) in object "
    "storage and `tts.completed` keyed by the audio id. `TTS_MODE=instant` writes silence of the speech's "
    "length; `TTS_FAIL_STORIES` / `TTS_FAIL_ATTEMPTS` inject failures to exercise restarts.",
)
