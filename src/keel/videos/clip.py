"""The clip Keel makes when no source is fetched (HLS_MODE=generated): ffmpeg's test pattern with the
video's title drawn on it and a tone, a few seconds at a low resolution, encoded as a fetched source is
(H.264 + AAC), so any player plays it. `keel demo` serves the same clip as its source in ffmpeg mode."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from keel.videos.hls import ENCODE, run_ffmpeg

log = logging.getLogger("keel.videos.clip")

SECONDS = 4
SIZE = "320x180"
RATE = 25
TONE_HZ = 440
MAX_TITLE_CHARS = 40

# drawtext needs a font file and none ships with Keel: the first of these that exists is used (each
# has Latin and Cyrillic glyphs), unless VIDEO_TITLE_FONT names one. Without any, the clip has no title.
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # Debian, Ubuntu
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",  # Fedora
    "/usr/share/fonts/TTF/DejaVuSans.ttf",  # Arch
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",  # Alpine
    "/System/Library/Fonts/Supplemental/Arial.ttf",  # macOS
    "C:/Windows/Fonts/arial.ttf",
)
# The font and the title are files in ffmpeg's working directory, named by these fixed names: no path or
# title text ever goes through the filter syntax, so nothing needs escaping. `expansion=none`: a `%` in a
# title is text, not a drawtext function.
TITLE = (
    "drawtext=fontfile=font.ttf:textfile=title.txt:expansion=none:fontsize=18:fontcolor=white"
    ":box=1:boxcolor=black@0.6:boxborderw=6:x=(w-text_w)/2:y=h-text_h-14"
)


def find_font(configured: str | None = None, candidates: Sequence[str] = FONT_CANDIDATES) -> Path | None:
    """The font file drawtext will use: the configured one, else the first candidate found."""
    for name in [configured] if configured else candidates:
        path = Path(name)
        if path.is_file():
            return path
    return None


def title_text(title: str) -> str:
    """One line, short enough for the frame (longer titles are cut with an ellipsis)."""
    line = " ".join("".join(c if c.isprintable() else " " for c in title).split())
    return line if len(line) <= MAX_TITLE_CHARS else line[: MAX_TITLE_CHARS - 1] + "…"


def _place_font(font: Path, work: Path) -> None:
    try:
        os.symlink(font, work / "font.ttf")
    except OSError:  # no symlinks here (Windows without the privilege): a copy does the same
        shutil.copyfile(font, work / "font.ttf")


def clip_args(ffmpeg: str, *, with_title: bool, output: Sequence[str]) -> list[str]:
    """ffmpeg's command for the clip; with a title it reads `font.ttf` and `title.txt` from its cwd."""
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={SIZE}:rate={RATE}:duration={SECONDS}",
        "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ}:sample_rate=44100:duration={SECONDS}",
        *(["-vf", TITLE] if with_title else []),
        *ENCODE, "-preset", "ultrafast", "-b:a", "64k", "-shortest",
        *output,
    ]  # fmt: skip


async def make_clip(
    ffmpeg: str, title: str, work: Path, output: Sequence[str], *, font: Path | None, timeout_s: float
) -> None:
    """Encode the clip to `output` (ffmpeg output options and path), using `work` for its own files."""
    text = title_text(title)
    with_title = font is not None and bool(text)
    if with_title:
        assert font is not None
        _place_font(font, work)
        (work / "title.txt").write_text(text, encoding="utf-8")
    elif font is None:
        log.warning("no font file found (set VIDEO_TITLE_FONT): the clip is made without its title")
    await run_ffmpeg(clip_args(ffmpeg, with_title=with_title, output=output), timeout_s, cwd=work)
