"""The events the orchestrator consumes, read from their bare payloads (poison when malformed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keel.cityguide.events import keyed_audio_id, optional_float, optional_int, text_field
from keel.core.events import PoisonMessage

MAX_STORIES = 100
MAX_TEXT = 20_000
TTS_STATUSES = ("completed", "failed")


@dataclass(frozen=True, slots=True)
class RouteConfirmed:
    route_id: str
    mode: str
    route: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Story:
    story_id: str
    position: int
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class StoriesGenerated:
    route_id: str
    lang: str
    stories: tuple[Story, ...]


@dataclass(frozen=True, slots=True)
class TtsCompleted:
    route_id: str
    story_id: str
    status: str
    audio_id: str | None
    duration_s: float | None
    error: str | None
    # The tts_batch attempt the result belongs to; None from a producer that does not echo it.
    attempt: int | None


def route_confirmed(payload: dict[str, Any]) -> RouteConfirmed:
    mode = payload.get("mode", "walk")
    return RouteConfirmed(
        route_id=text_field(payload, "route_id"),
        mode=text_field({"mode": mode}, "mode", max_len=50),
        route=payload,
    )


def _story(item: object, position: int) -> Story:
    if not isinstance(item, dict):
        raise PoisonMessage("every story must be a JSON object")
    text = item.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise PoisonMessage(f"story text must be 1..{MAX_TEXT} characters")
    title = item.get("title", "")
    return Story(
        story_id=text_field(item, "story_id"),
        position=position,
        title=title if isinstance(title, str) else "",
        text=text.strip(),
    )


def stories_generated(payload: dict[str, Any]) -> StoriesGenerated:
    stories = payload.get("stories")
    if not isinstance(stories, list) or len(stories) > MAX_STORIES:
        raise PoisonMessage(f"stories must be a list of at most {MAX_STORIES}")
    parsed = tuple(_story(item, n) for n, item in enumerate(stories))
    if len({s.story_id for s in parsed}) != len(parsed):
        raise PoisonMessage("story ids must be unique within a route")
    return StoriesGenerated(
        route_id=text_field(payload, "route_id"),
        lang=text_field({"lang": payload.get("lang", "ru")}, "lang", max_len=10),
        stories=parsed,
    )


def tts_completed(payload: dict[str, Any], key: str | None = None) -> TtsCompleted:
    """`key`: the record key, the audio id (keel.cityguide.events.keyed_audio_id); a parked result
    comes back without one, its payload carrying the id resolved when it arrived."""
    status = payload.get("status", "completed")
    if status not in TTS_STATUSES:
        raise PoisonMessage(f"status must be one of {TTS_STATUSES}, got {status!r}")
    audio_id = keyed_audio_id(key, payload) if status == "completed" else None
    error = payload.get("error")
    return TtsCompleted(
        route_id=text_field(payload, "route_id"),
        story_id=text_field(payload, "story_id"),
        status=status,
        audio_id=audio_id,
        duration_s=optional_float(payload, "duration_s"),
        error=str(error)[:1000] if error is not None else None,
        attempt=optional_int(payload, "attempt"),
    )


def inbox_key(kind: str, payload: dict[str, Any]) -> str:
    """The natural key of a message that came without an event id (an outside producer)."""
    parts = [kind, str(payload["route_id"])]
    if kind == "tts.completed":
        parts += [str(payload["story_id"]), str(payload.get("status")), str(payload.get("attempt"))]
    return ":".join(parts)


def tts_result(payload: dict[str, Any], key: str | None) -> tuple[TtsCompleted, dict[str, Any]]:
    """A consumed `tts.completed` and the payload to keep for it (parked until its route is known),
    carrying the audio id the record key gave."""
    msg = tts_completed(payload, key)
    if msg.audio_id is not None and payload.get("audio_id") != msg.audio_id:
        payload = {**payload, "audio_id": msg.audio_id}
    return msg, payload
