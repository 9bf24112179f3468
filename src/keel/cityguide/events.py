"""Reading cityguide payloads: a missing or mistyped field is a poison message (to the DLQ), never a crash."""

from __future__ import annotations

from typing import Any

from keel.core.events import PoisonMessage


def text_field(payload: dict[str, Any], name: str, *, max_len: int = 200) -> str:
    """A required non-empty string; numbers (an outside producer's int ids) are accepted as text."""
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PoisonMessage(f"{name} must be a non-empty string, got {type(value).__name__}")
    text = str(value).strip()
    if not text or len(text) > max_len:
        raise PoisonMessage(f"{name} must be 1..{max_len} characters")
    return text


def optional_int(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise PoisonMessage(f"{name} must be an integer")
    return value


def optional_float(payload: dict[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PoisonMessage(f"{name} must be a number")
    return float(value)


def keyed_audio_id(key: str | None, payload: dict[str, Any], *, max_len: int = 200) -> str:
    """The audio id of a `tts.completed` record. Seed 000: the record key is the audio id; a payload
    `audio_id` (the seed shows one, as a number) is optional and, when both are there, must agree with
    the key: a record whose two ids disagree could file one audio under another's name, so it goes to
    the DLQ with both named. Without a key (an outside producer), the payload's id is the one."""
    named = text_field(payload, "audio_id", max_len=max_len) if payload.get("audio_id") is not None else None
    if key and named is not None and named != key:
        raise PoisonMessage(
            f"tts.completed record key {key[:40]!r} and payload audio_id {named[:40]!r} disagree"
        )
    audio_id = key or named
    if not audio_id:
        raise PoisonMessage("tts.completed names no audio: no record key and no payload audio_id")
    return audio_id
