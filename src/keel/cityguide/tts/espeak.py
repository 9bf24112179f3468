"""The ctypes binding to libespeak-ng from the `espeakng-loader` wheel: text in, 16-bit mono PCM out.

eSpeak NG keeps process-global state and is not thread-safe, so every call into it, from any
`Espeak` object, holds one process-wide lock (callers run it in a worker thread to keep the event loop
free). The library is initialised once per process; the synth callback is set before each synthesis
so the samples go to the object that asked."""

from __future__ import annotations

import ctypes
import threading

import espeakng_loader  # type: ignore[import-untyped]

AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_CHARS_UTF8 = 1
POS_CHARACTER = 1
EE_OK = 0

# int callback(short *wav, int numsamples, espeak_EVENT *events); returning 0 continues synthesis.
SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# The C library is one per process, whatever number of Python objects use it.
_LOCK = threading.Lock()
_library: tuple[ctypes.CDLL, int] | None = None


class EspeakError(RuntimeError):
    pass


def _declare(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint),
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int


def _load() -> tuple[ctypes.CDLL, int]:
    """The library and its sample rate; called with `_LOCK` held."""
    global _library
    if _library is None:
        lib = ctypes.CDLL(str(espeakng_loader.get_library_path()))
        _declare(lib)
        data = str(espeakng_loader.get_data_path()).encode()
        rate = int(lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0))
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate})")
        _library = (lib, rate)
    return _library


class Espeak:
    """`synthesize(text, voice)` → (PCM bytes: signed 16-bit little-endian mono, sample rate)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        # Referenced for this object's lifetime: eSpeak calls it from inside espeak_Synth.
        self._callback = SynthCallback(self._on_samples)

    def _on_samples(self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int | None) -> int:
        if wav and count > 0:
            self._chunks.append(ctypes.string_at(wav, count * 2))
        return 0

    def synthesize(self, text: str, voice: str = "ru") -> tuple[bytes, int]:
        with _LOCK:
            lib, rate = _load()
            lib.espeak_SetSynthCallback(self._callback)
            if lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
                raise EspeakError(f"eSpeak has no voice {voice!r}")
            raw = text.encode() + b"\0"
            self._chunks = []
            status = lib.espeak_Synth(raw, len(raw), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
            pcm, self._chunks = b"".join(self._chunks), []
            if status != EE_OK:
                raise EspeakError(f"espeak_Synth failed ({status})")
            return pcm, rate
