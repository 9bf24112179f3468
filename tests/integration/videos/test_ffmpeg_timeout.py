"""VIDEO_FFMPEG_TIMEOUT_S cuts a long ffmpeg run off: the process is killed, not left behind, and the
video's caller reads `transcode_timeout`, a failure worth another try (a busy machine may finish)."""

from __future__ import annotations

import time
from pathlib import Path

import imageio_ffmpeg
import psutil
import pytest

from keel.videos.failures import failure, is_permanent, public_error
from keel.videos.hls import FfmpegTimedOut, run_ffmpeg


async def test_ffmpeg_past_its_timeout_is_killed_and_reported_as_transcode_timeout(tmp_path: Path) -> None:
    # Real-time input (-re) of a minute of tone: runs for a minute unless cut off.
    args = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-re", "-f", "lavfi", "-i", "sine=duration=60"]
    args += ["-f", "null", "-"]
    began = time.monotonic()
    with pytest.raises(FfmpegTimedOut) as timed_out:
        await run_ffmpeg(args, timeout_s=0.5, cwd=tmp_path)
    assert time.monotonic() - began < 10, "killed at the timeout, not at the end of its run"
    left = [p for p in psutil.Process().children(recursive=True) if "ffmpeg" in p.name()]
    assert left == [], "no ffmpeg left behind"
    public = failure(timed_out.value)
    assert public == "transcode_timeout: converting took longer than 0.5s (VIDEO_FFMPEG_TIMEOUT_S)"
    assert public_error(public) == public, "a code callers may read"
    assert not is_permanent(timed_out.value)
