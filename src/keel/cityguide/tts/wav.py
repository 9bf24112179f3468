"""PCM to WAV with the standard library, and the silent stand-in the instant mode produces."""

from __future__ import annotations

import io
import wave

SAMPLE_WIDTH = 2  # 16-bit
SPEECH_CHARS_PER_S = 14.0  # roughly eSpeak's Russian speaking rate, for the instant mode's length


def to_wav(pcm: bytes, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(SAMPLE_WIDTH)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def duration_s(pcm: bytes, rate: int) -> float:
    return len(pcm) / SAMPLE_WIDTH / rate


def silence_for(text: str, rate: int) -> bytes:
    """Silence as long as `text` would take to say: the instant mode, for benchmarks."""
    seconds = max(len(text) / SPEECH_CHARS_PER_S, 0.1)
    return b"\0\0" * int(seconds * rate)
