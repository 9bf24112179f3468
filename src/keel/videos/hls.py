"""HLS output: ffmpeg writes `index.m3u8` and `<n>.ts` into a local directory (from a fetched source,
or from the clip Keel makes when none is fetched), and the files go into object storage under
`videos/<id>/`, the playlist naming its segments as `<id>/<n>.ts`, so that served at `/hls/<id>.m3u8`
they resolve to `/hls/<id>/<n>.ts`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from pathlib import Path

from keel.core.storage import ObjectStore

log = logging.getLogger("keel.videos.hls")

# ffmpeg reads the downloaded file and writes local files, nothing else: no protocol but `file` (a source
# that is itself a playlist or a concat list cannot make the worker fetch URLs), and only container
# demuxers of video files (no hls, concat or image2 demuxer to name other local files).
PROTOCOLS = "file"
DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,mpeg,ogg,asf,wav"

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
SEGMENT_NAME = re.compile(r"^[0-9]{1,6}\.ts$")
SEGMENT_S = 2

# H.264 and AAC, the codecs every HLS player decodes; a keyframe every SEGMENT_S seconds, since a segment
# can only start at one and the cut should follow -hls_time.
ENCODE = (
    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_S})",
    "-c:a", "aac",
)  # fmt: skip


class FfmpegFailed(Exception):
    """ffmpeg exited with an error (or was killed: a negative `returncode`)."""

    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


class FfmpegTimedOut(FfmpegFailed):
    """ffmpeg ran past VIDEO_FFMPEG_TIMEOUT_S and was killed: another try may finish (a busy machine)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"ffmpeg did not finish within {timeout_s:g}s and was killed", None)
        self.timeout_s = timeout_s


class SegmentingFailed(Exception):
    """ffmpeg could not turn the source into HLS. `permanent`: ffmpeg itself refused the file (not a
    video, truncated), which no retry of the same bytes changes; a killed ffmpeg may do better next time."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def playlist_key(video_id: int) -> str:
    return f"videos/{video_id}/index.m3u8"


def segment_key(video_id: int, name: str) -> str:
    return f"videos/{video_id}/{name}"


def hls_output(out_dir: Path, video_id: int) -> list[str]:
    """ffmpeg's output options for a VOD playlist `out_dir/index.m3u8` and its `<n>.ts` segments."""
    return [
        "-f", "hls", "-hls_time", str(SEGMENT_S), "-hls_playlist_type", "vod",
        "-hls_segment_filename", str(out_dir / "%d.ts"),
        "-hls_base_url", f"{video_id}/",
        str(out_dir / "index.m3u8"),
    ]  # fmt: skip


async def run_ffmpeg(args: list[str], timeout_s: float, cwd: Path | None = None) -> None:
    """Run ffmpeg (`args[0]`) to its end; FfmpegFailed with the tail of its output when it fails. The
    process is killed on timeout or cancellation, never left behind."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=cwd
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if isinstance(exc, TimeoutError):
            raise FfmpegTimedOut(timeout_s) from None
        raise
    if proc.returncode != 0:
        tail = stderr.decode(errors="replace").strip()[-500:]
        raise FfmpegFailed(f"ffmpeg exited with {proc.returncode}: {tail}", proc.returncode)


async def segment_with_ffmpeg(
    ffmpeg: str, source: Path, out_dir: Path, video_id: int, timeout_s: float
) -> Path:
    """Segment a local file into `out_dir` (H.264 + AAC, 2 s segments); the playlist's path."""
    playlist = out_dir / "index.m3u8"
    args = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-protocol_whitelist", PROTOCOLS, "-format_whitelist", DEMUXERS,
        "-i", str(source),
        *ENCODE, "-preset", "veryfast",
        *hls_output(out_dir, video_id),
    ]  # fmt: skip
    try:
        await run_ffmpeg(args, timeout_s)
    except FfmpegTimedOut:
        raise
    except FfmpegFailed as exc:
        # A positive exit status is ffmpeg's verdict on the file; a signal is not.
        raise SegmentingFailed(str(exc), permanent=(exc.returncode or 0) > 0) from None
    if not playlist.exists():
        raise SegmentingFailed("ffmpeg wrote no playlist", permanent=True)
    return playlist


def _segments(out_dir: Path) -> list[Path]:
    return sorted((p for p in out_dir.iterdir() if SEGMENT_NAME.match(p.name)), key=lambda p: int(p.stem))


async def upload_dir(store: ObjectStore, out_dir: Path, video_id: int) -> int:
    """Upload the segments, then the playlist; the number of segments."""
    segments = await asyncio.to_thread(_segments, out_dir)
    for path in segments:
        data = await asyncio.to_thread(path.read_bytes)
        await store.put(segment_key(video_id, path.name), data, content_type=SEGMENT_TYPE)
    # The playlist goes last: once it is there, every segment it names is there too.
    playlist = await asyncio.to_thread((out_dir / "index.m3u8").read_bytes)
    await store.put(playlist_key(video_id), playlist, content_type=PLAYLIST_TYPE)
    return len(segments)
