"""Where synthesised audio lives in object storage, shared by the TTS worker (writes) and delivery (serves)."""

from __future__ import annotations

import re

AUDIO_CONTENT_TYPE = "audio/wav"
_AUDIO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def is_audio_id(value: str) -> bool:
    """Audio ids are plain names (no slashes, no dots first): safe in an object key and a URL path."""
    return _AUDIO_ID.fullmatch(value) is not None


def audio_key(audio_id: str) -> str:
    if not is_audio_id(audio_id):
        raise ValueError(f"not an audio id: {audio_id[:40]!r}")
    return f"cityguide/audio/{audio_id}.wav"


def cdn_path(audio_id: str) -> str:
    """The path a signed CDN link points at (and whose signature the verifier checks)."""
    return f"/cdn/audio/{audio_id}"
