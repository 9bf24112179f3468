"""The demo's media side: its own source video, served on loopback for a platform in HLS_MODE=ffmpeg
(which fetches sources) that allow-lists it, and ffmpeg decoding a segment as a player would."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from keel.demo.steps import DemoFailure
from keel.videos.clip import find_font, make_clip
from keel.videos.hls import FfmpegFailed

log = logging.getLogger("keel.demo.media")

# The port `keel demo` serves its clip on unless told otherwise: the platform allow-lists it with
# VIDEO_FETCH_ALLOW_HOSTS=127.0.0.1:8765 (loopback is refused as a source everywhere else).
SOURCE_PORT = 8765
HOST = "127.0.0.1"
FFMPEG_TIMEOUT_S = 60.0


def _ffmpeg() -> str:
    import imageio_ffmpeg  # type: ignore[import-untyped]

    path: str = imageio_ffmpeg.get_ffmpeg_exe()
    return path


async def _clip_mp4(title: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="keel-demo-") as tmp:
        work = Path(tmp)
        out = work / "clip.mp4"
        output = ["-movflags", "+faststart", "-f", "mp4", str(out)]
        try:
            await make_clip(_ffmpeg(), title, work, output, font=find_font(), timeout_s=FFMPEG_TIMEOUT_S)
        except FfmpegFailed as exc:
            raise DemoFailure(f"could not make the demo's clip: {exc}") from None
        return await asyncio.to_thread(out.read_bytes)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _listen(handler: Handler, port: int) -> asyncio.Server:
    """On `port`, or on any free port when it is taken (the platform then refuses the URL, and the
    flow falls back to a source it does not fetch)."""
    try:
        return await asyncio.start_server(handler, HOST, port)
    except OSError as exc:
        log.warning("port %s is taken (%s): the demo's clip is served on another port", port, exc)
        return await asyncio.start_server(handler, HOST, 0)


@contextlib.asynccontextmanager
async def serve_clip(title: str, port: int = SOURCE_PORT) -> AsyncIterator[str]:
    """A short clip made by the bundled ffmpeg, served as MP4 on HOST for as long as the block runs;
    yields its URL (one path, fresh per run, since a video's source URL is unique)."""
    body = await _clip_mp4(title)
    path = f"/keel-demo-{uuid.uuid4().hex[:8]}.mp4"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, target = head.split(b" ", 2)[:2]
            found = method == b"GET" and target.decode(errors="replace") == path
            status, content = ("200 OK", body) if found else ("404 Not Found", b"not found")
            kind = "video/mp4" if found else "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(content)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + content
            )
            await writer.drain()
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that never sent a request line: nothing to answer
        finally:
            writer.close()

    server = await _listen(handle, port)
    bound = server.sockets[0].getsockname()[1]
    try:
        yield f"http://{HOST}:{bound}{path}"
    finally:
        server.close()
        await server.wait_closed()


async def decode(segment: bytes) -> str:
    """Decode an MPEG-TS segment with the bundled ffmpeg, every frame: its errors ('' when it plays)."""
    proc = await asyncio.create_subprocess_exec(
        _ffmpeg(), "-v", "error", "-f", "mpegts", "-i", "pipe:0", "-f", "null", "-",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, errors = await asyncio.wait_for(proc.communicate(segment), FFMPEG_TIMEOUT_S)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    text = errors.decode(errors="replace").strip()
    return text or ("" if proc.returncode == 0 else f"ffmpeg exited with {proc.returncode}")
