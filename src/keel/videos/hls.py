"""HLS output: the generated (seed) playlist with placeholder MPEG-TS segments, and real segmenting
with ffmpeg. Both write into a directory-like layout under `videos/<id>/` in object storage:
`index.m3u8` and `<n>.ts`, the playlist naming its segments as `<id>/<n>.ts`, so that served at
`/hls/<id>.m3u8` they resolve to `/hls/<id>/<n>.ts`."""

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

GENERATED_SEGMENTS = 3
GENERATED_SEGMENT_S = 10
# A null packet (PID 0x1FFF): valid MPEG-TS framing that carries nothing, like the seed's fake playlist.
NULL_PACKET = bytes([0x47, 0x1F, 0xFF, 0x10]) + bytes([0xFF] * 184)


class SegmentingFailed(Exception):
    """ffmpeg could not turn the source into HLS (not a video, truncated, timed out)."""


def playlist_key(video_id: int) -> str:
    return f"videos/{video_id}/index.m3u8"


def segment_key(video_id: int, name: str) -> str:
    return f"videos/{video_id}/{name}"


def generated_playlist(video_id: int) -> str:
    """The seed's generated VOD playlist (RFC 8216): fixed-length segments, ended."""
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{GENERATED_SEGMENT_S}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
    ]
    for n in range(GENERATED_SEGMENTS):
        lines += [f"#EXTINF:{GENERATED_SEGMENT_S:.1f},", f"{video_id}/{n}.ts"]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


async def write_generated(store: ObjectStore, video_id: int) -> None:
    segment = NULL_PACKET * 7
    for n in range(GENERATED_SEGMENTS):
        await store.put(segment_key(video_id, f"{n}.ts"), segment, content_type=SEGMENT_TYPE)
    # The playlist goes last: once it is there, every segment it names is there too.
    await store.put(playlist_key(video_id), generated_playlist(video_id).encode(), content_type=PLAYLIST_TYPE)


async def segment_with_ffmpeg(
    ffmpeg: str, source: Path, out_dir: Path, video_id: int, timeout_s: float
) -> Path:
    """Run `ffmpeg -f hls -hls_time 2 -hls_playlist_type vod` on a local file; the playlist's path."""
    playlist = out_dir / "index.m3u8"
    args = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-protocol_whitelist", PROTOCOLS, "-format_whitelist", DEMUXERS,
        "-i", str(source),
        # A keyframe every 2 s: segments can only start at one, so the cut follows -hls_time.
        "-c:v", "libx264", "-preset", "veryfast", "-force_key_frames", "expr:gte(t,n_forced*2)",
        "-c:a", "aac",
        "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod",
        "-hls_segment_filename", str(out_dir / "%d.ts"),
        "-hls_base_url", f"{video_id}/",
        str(playlist),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0 or not playlist.exists():
        tail = stderr.decode(errors="replace").strip()[-500:]
        raise SegmentingFailed(f"ffmpeg exited with {proc.returncode}: {tail}")
    return playlist


def _segments(out_dir: Path) -> list[Path]:
    return sorted((p for p in out_dir.iterdir() if SEGMENT_NAME.match(p.name)), key=lambda p: int(p.stem))


async def upload_dir(store: ObjectStore, out_dir: Path, video_id: int) -> int:
    """Upload the segments, then the playlist; the number of segments."""
    segments = await asyncio.to_thread(_segments, out_dir)
    for path in segments:
        data = await asyncio.to_thread(path.read_bytes)
        await store.put(segment_key(video_id, path.name), data, content_type=SEGMENT_TYPE)
    playlist = await asyncio.to_thread((out_dir / "index.m3u8").read_bytes)
    await store.put(playlist_key(video_id), playlist, content_type=PLAYLIST_TYPE)
    return len(segments)
