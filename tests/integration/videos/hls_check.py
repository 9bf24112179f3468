"""A small RFC 8216 checker for media playlists (enough to tell a valid VOD playlist from a fake one),
and ffmpeg decoding a segment as a player would."""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from pathlib import Path

_EXTINF = re.compile(r"^#EXTINF:(?P<d>[0-9]+(?:\.[0-9]+)?),.*$")
_INT_TAG = re.compile(r"^#EXT-X-(?P<name>VERSION|TARGETDURATION|MEDIA-SEQUENCE):(?P<v>[0-9]+)$")


@dataclass(frozen=True)
class MediaPlaylist:
    version: int
    target_duration: int
    media_sequence: int
    segments: list[tuple[float, str]]
    ended: bool


def parse_media_playlist(text: str) -> MediaPlaylist:
    """Parse and check: #EXTM3U first; VERSION, TARGETDURATION once each; every #EXTINF followed by a URI;
    every segment no longer than TARGETDURATION when rounded (RFC 8216 §4.3.3.1); ENDLIST last."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert lines and lines[0] == "#EXTM3U", "a playlist starts with #EXTM3U"
    tags: dict[str, int] = {}
    segments: list[tuple[float, str]] = []
    pending: float | None = None
    ended = False
    for line in lines[1:]:
        assert not ended, f"nothing may follow #EXT-X-ENDLIST: {line!r}"
        if m := _INT_TAG.match(line):
            assert m["name"] not in tags, f"{m['name']} appears twice"
            tags[m["name"]] = int(m["v"])
        elif m := _EXTINF.match(line):
            assert pending is None, "#EXTINF without a URI"
            pending = float(m["d"])
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line.startswith("#"):
            continue  # other tags (PLAYLIST-TYPE, comments) are allowed
        else:
            assert pending is not None, f"URI without #EXTINF: {line!r}"
            segments.append((pending, line))
            pending = None
    assert pending is None, "the last #EXTINF has no URI"
    assert "VERSION" in tags and "TARGETDURATION" in tags, f"missing required tags: {tags}"
    assert segments, "a media playlist needs segments"
    for duration, uri in segments:
        assert round(duration) <= tags["TARGETDURATION"], f"{uri} is longer than TARGETDURATION"
        assert not math.isnan(duration) and duration > 0
    return MediaPlaylist(
        version=tags["VERSION"],
        target_duration=tags["TARGETDURATION"],
        media_sequence=tags.get("MEDIA-SEQUENCE", 0),
        segments=segments,
        ended=ended,
    )


async def decode(ffmpeg: str, media: Path) -> tuple[int, str, str]:
    """ffmpeg decodes every frame of `media` (`-f null`): (exit code, its errors, its stream lines)."""
    run = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-nostdin", "-i", str(media), "-f", "null", "-",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, info = await asyncio.wait_for(run.communicate(), 60)
    strict = await asyncio.create_subprocess_exec(
        ffmpeg, "-v", "error", "-nostdin", "-i", str(media), "-f", "null", "-",
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, errors = await asyncio.wait_for(strict.communicate(), 60)
    streams = "\n".join(
        line.strip() for line in info.decode().splitlines() if line.strip().startswith("Stream #0")
    )
    return strict.returncode or 0, errors.decode(), streams
