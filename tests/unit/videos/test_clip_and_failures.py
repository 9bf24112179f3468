"""The generated clip's title and font choice, and which video failures are permanent."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.videos.clip import MAX_TITLE_CHARS, find_font, title_text
from keel.videos.failures import failure, is_permanent
from keel.videos.fetch import FetchFailed, SourceRefused
from keel.videos.hls import FfmpegFailed, SegmentingFailed


def test_title_is_one_printable_line_cut_to_fit_the_frame():
    assert title_text("  Big\nBuck\tBunny  ") == "Big Buck Bunny"
    assert title_text("Кремль 100% {x}") == "Кремль 100% {x}"  # drawtext runs with expansion=none
    long = title_text("x" * 100)
    assert len(long) == MAX_TITLE_CHARS and long.endswith("…")


def test_font_is_the_configured_file_or_the_first_candidate_that_exists(tmp_path: Path):
    font = tmp_path / "font.ttf"
    font.write_bytes(b"ttf")
    assert find_font(str(font)) == font
    assert find_font(str(tmp_path / "missing.ttf")) is None  # a configured font is never swapped
    assert find_font(None, candidates=[str(tmp_path / "none.ttf"), str(font)]) == font
    assert find_font(None, candidates=[str(tmp_path / "none.ttf")]) is None


@pytest.mark.parametrize(
    ("exc", "permanent"),
    [
        (SourceRefused("loopback"), True),
        (FetchFailed("HTTP 404", permanent=True), True),
        (FetchFailed("HTTP 503"), False),
        (SegmentingFailed("not a video", permanent=True), True),
        (SegmentingFailed("killed"), False),
        (FfmpegFailed("clip", 1), False),
        (TimeoutError(), False),
    ],
)
def test_only_answers_a_retry_cannot_change_are_permanent(exc, permanent):
    assert is_permanent(exc) is permanent
    assert failure(exc).split(":")[0] in {
        "source_refused",
        "source_unavailable",
        "transcode_failed",
        "processing_failed",
    }
