"""PCM to WAV, and the silent stand-in the instant mode produces.

The audio is the worker's whole volume (~0.5 MB per story): a WAV is its 44-byte header and the PCM
after it, joined in one copy (the `wave` module's file interface copied it twice), and silence is a
view of one zeroed buffer, not a new one per story."""

from __future__ import annotations

import struct

SAMPLE_WIDTH = 2  # 16-bit
CHANNELS = 1
SPEECH_CHARS_PER_S = 14.0  # roughly eSpeak's Russian speaking rate, for the instant mode's length
# RIFF header of a PCM WAV: chunk sizes, format 1 (PCM), channels, rate, byte rate, block align, bits.
_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")


Pcm = bytes | memoryview
_zeros = bytes(0)  # grown to the longest silence asked for


def to_wav(pcm: Pcm, rate: int) -> bytes:
    header = _HEADER.pack(
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        1,
        CHANNELS,
        rate,
        rate * CHANNELS * SAMPLE_WIDTH,
        CHANNELS * SAMPLE_WIDTH,
        8 * SAMPLE_WIDTH,
        b"data",
        len(pcm),
    )
    return b"".join((header, pcm))


def duration_s(pcm: Pcm, rate: int) -> float:
    return len(pcm) / SAMPLE_WIDTH / rate


def silence_for(text: str, rate: int) -> memoryview:
    """Silence as long as `text` would take to say: the instant mode, for benchmarks."""
    global _zeros
    seconds = max(len(text) / SPEECH_CHARS_PER_S, 0.1)
    size = SAMPLE_WIDTH * int(seconds * rate)
    if size > len(_zeros):
        _zeros = bytes(size)
    return memoryview(_zeros)[:size]
