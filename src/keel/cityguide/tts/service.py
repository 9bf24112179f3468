"""The TTS worker's one use case: tts.requested → speech audio in object storage → tts.completed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keel.cityguide import topics
from keel.cityguide.audio import AUDIO_CONTENT_TYPE, audio_key
from keel.cityguide.events import optional_int, text_field
from keel.cityguide.publisher import Publisher
from keel.cityguide.tts.espeak import EspeakError
from keel.cityguide.tts.wav import duration_s, to_wav
from keel.core.events import Event, PoisonMessage
from keel.core.metrics import JOB_DURATION
from keel.core.storage import ObjectStore

# (text, voice) → (16-bit mono PCM, sample rate); blocking, run in a thread.
Synthesize = Callable[[str, str], tuple[bytes, int]]

_AUDIO_NS = uuid.UUID("6f1d3c1e-7a51-4a57-9d0e-2b8c8a3f4e11")
MAX_TEXT = 20_000


@dataclass(frozen=True, slots=True)
class FailureInjection:
    """Synthesis of these stories fails on their first `attempts` attempts (to exercise restarts)."""

    stories: frozenset[str] = frozenset()
    attempts: int = 1

    def fails(self, story_id: str, attempt: int) -> bool:
        return story_id in self.stories and attempt <= self.attempts


def audio_id_for(route_id: str, story_id: str, voice: str, text: str) -> str:
    """Deterministic: the same request makes the same audio id, so a redelivery overwrites one object."""
    return uuid.uuid5(_AUDIO_NS, f"{route_id}\n{story_id}\n{voice}\n{text}").hex


class TtsWorker:
    def __init__(
        self,
        publisher: Publisher,
        objects: ObjectStore,
        synthesize: Synthesize,
        *,
        voice: str = "ru",
        failures: FailureInjection | None = None,
        inline: bool = False,
    ) -> None:
        self._publisher = publisher
        self._objects = objects
        self._synthesize = synthesize
        self._voice = voice
        self._failures = failures or FailureInjection()
        # An engine that does not block (instant silence) runs on the loop: no thread hand-off per request.
        self._inline = inline

    async def on_requested(self, event: Event) -> None:
        payload = event.payload
        route_id, story_id = text_field(payload, "route_id"), text_field(payload, "story_id")
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            raise PoisonMessage(f"tts.requested text must be 1..{MAX_TEXT} characters")
        attempt = optional_int(payload, "attempt") or 1
        audio_id = audio_id_for(route_id, story_id, self._voice, text)
        result: dict[str, Any] = {
            "route_id": route_id,
            "story_id": story_id,
            "audio_id": audio_id,
            "position": optional_int(payload, "position"),
            "attempt": attempt,
            "lang": payload.get("lang", "ru"),
        }
        started = time.perf_counter()
        try:
            result |= await self._speak(audio_id, story_id, text, attempt)
        finally:
            outcome = "ok" if result.get("status") == "completed" else "failed"
            JOB_DURATION.labels(job="tts.synthesize", outcome=outcome).observe(time.perf_counter() - started)
        await self._publisher.publish(topics.TTS_COMPLETED, audio_id, result)

    async def _speak(self, audio_id: str, story_id: str, text: str, attempt: int) -> dict[str, Any]:
        if self._failures.fails(story_id, attempt):
            return {"status": "failed", "error": f"injected failure (TTS_FAIL_STORIES, attempt {attempt})"}
        try:
            if self._inline:
                pcm, rate = self._synthesize(text, self._voice)
            else:
                pcm, rate = await asyncio.to_thread(self._synthesize, text, self._voice)
        except EspeakError as exc:
            return {"status": "failed", "error": str(exc)}
        await self._objects.put(audio_key(audio_id), to_wav(pcm, rate), content_type=AUDIO_CONTENT_TYPE)
        return {"status": "completed", "duration_s": round(duration_s(pcm, rate), 3)}
