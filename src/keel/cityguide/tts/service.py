"""The TTS worker's one use case: tts.requested → speech audio in object storage → tts.completed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from keel.cityguide import topics
from keel.cityguide.audio import AUDIO_CONTENT_TYPE, audio_key
from keel.cityguide.events import optional_int, text_field
from keel.cityguide.publisher import Publisher
from keel.cityguide.tts.espeak import EspeakError
from keel.cityguide.tts.wav import Pcm, duration_s, to_wav
from keel.core.bus.message import Headers
from keel.core.events import Event, PoisonMessage
from keel.core.metrics import JOB_DURATION
from keel.core.storage import ObjectStore

Speech = tuple[Pcm, int]  # 16-bit mono PCM, sample rate
# (text, voice) → speech; blocking, run in a thread.
Synthesize = Callable[[str, str], Speech]

_AUDIO_NS = uuid.UUID("6f1d3c1e-7a51-4a57-9d0e-2b8c8a3f4e11")
MAX_TEXT = 20_000
# Audio made and not stored yet, at most (~0.5 MB each): bounds a batch's memory, not its throughput.
STORES_IN_FLIGHT = 8


@dataclass(frozen=True, slots=True)
class FailureInjection:
    """Synthesis of these stories fails on their first `attempts` attempts (to exercise restarts)."""

    stories: frozenset[str] = frozenset()
    attempts: int = 1

    def fails(self, story_id: str, attempt: int) -> bool:
        return story_id in self.stories and attempt <= self.attempts


@dataclass(frozen=True, slots=True)
class Job:
    """One checked tts.requested."""

    route_id: str
    story_id: str
    text: str
    attempt: int
    position: int | None
    lang: Any
    audio_id: str
    trace: Headers  # the request's trace context, carried on by its result


def urgency(event: Event) -> float:
    """A request's story position: every route's first story is spoken before any route's second."""
    position = event.payload.get("position")
    return float(position) if isinstance(position, int) and not isinstance(position, bool) else 0.0


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

    async def on_requested(self, events: Sequence[Event]) -> None:
        """A fetched run of requests: each route's first story first (what its listener waits for),
        speech made one request at a time, each result stored and published as soon as it is made;
        returns once every result is acknowledged."""
        # Every request is checked before any effect: a bad one fails the batch before it starts.
        jobs = sorted((self._job(event) for event in events), key=lambda j: j.position or 0)
        storing = asyncio.Semaphore(STORES_IN_FLIGHT)
        pending: list[asyncio.Task[None]] = []
        try:
            for job in jobs:
                await storing.acquire()
                try:
                    speech = await self._speak(job)
                except BaseException:
                    storing.release()
                    raise
                pending.append(asyncio.create_task(self._finish(job, speech, storing)))
        finally:
            outcomes = await asyncio.gather(*pending, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def _job(self, event: Event) -> Job:
        payload = event.payload
        route_id, story_id = text_field(payload, "route_id"), text_field(payload, "story_id")
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            raise PoisonMessage(f"tts.requested text must be 1..{MAX_TEXT} characters")
        return Job(
            route_id=route_id,
            story_id=story_id,
            text=text,
            attempt=optional_int(payload, "attempt") or 1,
            position=optional_int(payload, "position"),
            lang=payload.get("lang", "ru"),
            audio_id=audio_id_for(route_id, story_id, self._voice, text),
            trace=event.headers,
        )

    async def _speak(self, job: Job) -> Speech | str:
        """The speech, or why there is none (a failed synthesis is a result, not an error)."""
        started = time.perf_counter()
        speech = await self._synthesized(job)
        outcome = "failed" if isinstance(speech, str) else "ok"
        JOB_DURATION.labels(task="tts.synthesize", outcome=outcome).observe(time.perf_counter() - started)
        return speech

    async def _synthesized(self, job: Job) -> Speech | str:
        if self._failures.fails(job.story_id, job.attempt):
            return f"injected failure (TTS_FAIL_STORIES, attempt {job.attempt})"
        try:
            if self._inline:
                return self._synthesize(job.text, self._voice)
            return await asyncio.to_thread(self._synthesize, job.text, self._voice)
        except EspeakError as exc:
            return str(exc)

    async def _finish(self, job: Job, speech: Speech | str, storing: asyncio.Semaphore) -> None:
        result: dict[str, Any] = {
            "route_id": job.route_id,
            "story_id": job.story_id,
            "audio_id": job.audio_id,
            "position": job.position,
            "attempt": job.attempt,
            "lang": job.lang,
        }
        try:
            if isinstance(speech, str):
                result |= {"status": "failed", "error": speech}
            else:
                pcm, rate = speech
                audio = to_wav(pcm, rate)
                await self._objects.put(audio_key(job.audio_id), audio, content_type=AUDIO_CONTENT_TYPE)
                result |= {"status": "completed", "duration_s": round(duration_s(pcm, rate), 3)}
        finally:
            storing.release()  # the audio is stored (or not): the next one may be made
        await self._publisher.publish(topics.TTS_COMPLETED, [(job.audio_id, result)], [job.trace])
