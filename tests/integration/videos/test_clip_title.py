"""The generated clip's title (README: VIDEO_TITLE_FONT, else a common system font; without one the
clip has no title and a warning says so), made by the real ffmpeg."""

from __future__ import annotations

import logging
from pathlib import Path

import imageio_ffmpeg
import pytest

from keel.videos.clip import find_font, make_clip
from tests.support import servers


async def clip(tmp_path: Path, font: Path | None) -> Path:
    out = tmp_path / "clip.mp4"
    output = ["-f", "mp4", str(out)]
    await make_clip(
        imageio_ffmpeg.get_ffmpeg_exe(), "Привет, title", tmp_path, output, font=font, timeout_s=60
    )
    return out


async def test_without_a_font_the_clip_is_made_untitled_and_a_warning_names_the_setting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="keel.videos.clip"):
        out = await clip(tmp_path, font=None)
    assert out.stat().st_size > 0 and out.read_bytes()[4:8] == b"ftyp"
    assert not (tmp_path / "title.txt").exists()  # nothing was drawn
    [warning] = [r.getMessage() for r in caplog.records if r.name == "keel.videos.clip"]
    assert "VIDEO_TITLE_FONT" in warning


async def test_with_a_font_the_title_is_drawn_from_its_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    font = find_font()
    if font is None:
        reason = "no font to draw the title with: apt-get install fonts-dejavu-core (.ci/run installs it)"
        if servers.env("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with caplog.at_level(logging.WARNING, logger="keel.videos.clip"):
        out = await clip(tmp_path, font=font)
    assert out.stat().st_size > 0
    assert (tmp_path / "title.txt").read_text(encoding="utf-8") == "Привет, title"
    assert not [r for r in caplog.records if r.name == "keel.videos.clip"]
