"""eSpeak NG through ctypes speaks Russian: real, non-silent 22,050 Hz 16-bit audio, safely from threads."""

from __future__ import annotations

import array
import io
import wave
from concurrent.futures import ThreadPoolExecutor

from keel.cityguide.tts.espeak import Espeak
from keel.cityguide.tts.wav import duration_s, silence_for, to_wav

SENTENCE = "Добро пожаловать в Казань. Перед вами Кремль."


def _peak(pcm: bytes) -> int:
    return max(abs(v) for v in array.array("h", pcm))


def test_espeak_turns_russian_text_into_seconds_of_audible_speech():
    pcm, rate = Espeak().synthesize(SENTENCE, "ru")
    assert rate == 22_050
    assert 1.0 < duration_s(pcm, rate) < 10.0
    assert _peak(pcm) > 1000  # speech, not silence


def test_the_wav_is_a_riff_wave_file_of_the_same_audio():
    pcm, rate = Espeak().synthesize("Привет.", "ru")
    data = to_wav(pcm, rate)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    with wave.open(io.BytesIO(data)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 22_050)
        assert reader.readframes(reader.getnframes()) == pcm


def test_the_wav_is_byte_for_byte_what_the_standard_library_writes():
    pcm = bytes(range(256)) * 9
    expected = io.BytesIO()
    with wave.open(expected, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(pcm)
    assert to_wav(pcm, 16_000) == expected.getvalue()


def test_concurrent_calls_from_threads_each_get_their_own_whole_utterance():
    """eSpeak varies a few samples between runs, so lengths are compared with a tolerance: samples of
    one call leaking into another would change a length by a whole utterance."""
    texts = [
        f"История номер {n}." if n % 2 else f"Длинная история номер {n}, про старый город." for n in range(8)
    ]
    serial = [len(Espeak().synthesize(t, "ru")[0]) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        parallel = [len(pcm) for pcm, _ in pool.map(lambda t: Espeak().synthesize(t, "ru"), texts)]
    for alone, together in zip(serial, parallel, strict=True):
        assert abs(alone - together) < alone * 0.05


def test_the_instant_mode_is_silence_about_as_long_as_the_speech():
    pcm = silence_for(SENTENCE, 22_050)
    assert _peak(pcm) == 0
    assert 2.0 < duration_s(pcm, 22_050) < 5.0
    shorter = silence_for(SENTENCE[:20], 22_050)  # a view of the same zeros, as long as its own text
    assert 0 < len(shorter) < len(pcm)
    with wave.open(io.BytesIO(to_wav(shorter, 22_050))) as read:
        assert (read.getframerate(), read.getnframes()) == (22_050, len(shorter) // 2)
