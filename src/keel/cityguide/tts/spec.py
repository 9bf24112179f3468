"""How the platform wires the TTS worker: one consumer, a producer, object storage, the speech engine."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from keel.cityguide import topics
from keel.cityguide.publisher import Publisher
from keel.cityguide.tts.espeak import Espeak
from keel.cityguide.tts.service import FailureInjection, Synthesize, TtsWorker
from keel.cityguide.tts.settings import TtsSettings
from keel.cityguide.tts.wav import silence_for
from keel.core.consumer import ConsumerRunner, Idempotent, RetryPolicy
from keel.core.infra import Infra
from keel.core.service import ServiceSpec, Wiring

GROUP = "tts"
SILENCE_RATE = 22_050


def routers() -> Sequence[APIRouter]:
    return []


def _instant(text: str, _voice: str) -> tuple[bytes, int]:
    return silence_for(text, SILENCE_RATE), SILENCE_RATE


def _engine(settings: TtsSettings) -> Synthesize:
    return _instant if settings.tts_mode == "instant" else Espeak().synthesize


async def wire(infra: Infra) -> Wiring:
    settings = TtsSettings()
    producer = infra.bus.producer()
    await producer.start()
    worker = TtsWorker(
        Publisher(producer),
        infra.storage,
        _engine(settings),
        voice=settings.tts_voice,
        failures=FailureInjection(settings.tts_fail_stories, settings.tts_fail_attempts),
    )
    runner = ConsumerRunner(
        infra.bus,
        group_id=GROUP,
        topics=[topics.TTS_REQUESTED],
        wire="bare",
        handler=Idempotent(worker.on_requested),
        dlq_topic=topics.DLQ,
        default_event_type=topics.TTS_REQUESTED,
        retry=RetryPolicy.from_settings(infra.settings),
    )
    return Wiring(workers=[runner], closers=[producer.stop])


SPEC = ServiceSpec(
    name="tts",
    title="Cityguide TTS worker",
    routers=routers,
    wire=wire,
    topics=(topics.TTS_REQUESTED, topics.TTS_COMPLETED, topics.DLQ),
    uses_database=False,
    description="Turns `tts.requested` into Russian speech (eSpeak NG, 22,050 Hz 16-bit mono WAV) in object "
    "storage and `tts.completed` keyed by the audio id. `TTS_MODE=instant` writes silence of the speech's "
    "length; `TTS_FAIL_STORIES` / `TTS_FAIL_ATTEMPTS` inject failures to exercise restarts.",
)
