"""What a video's `error` field tells its caller: a short code and a safe message, never the details.

The details (resolver answers, addresses and ports, HTTP client errors, ffmpeg's output, temporary
paths) help an attacker map the network behind the worker, so they go to the log only; the row keeps
`code: message`. Rows written before this are shown as `processing_failed` (`public_error`)."""

from __future__ import annotations

import re

from keel.videos.fetch import FetchFailed, SourceRefused
from keel.videos.hls import FfmpegTimedOut, SegmentingFailed

PROCESSING_FAILED = "processing_failed: the video could not be processed"
PROCESSING_TIMEOUT = "processing_timeout: processing did not finish within {timeout}"
ABANDONED = "processing_abandoned: gave up after {attempts} attempts that never finished"
_SAFE = re.compile(r"^(source_[a-z_]+|transcode_[a-z_]+|processing_[a-z_]+): [^\n]{1,200}$")


def failure(exc: BaseException) -> str:
    """The `code: message` a caller may see for this exception."""
    if isinstance(exc, SourceRefused):
        return "source_refused: the source URL is not allowed (not a public http(s) address)"
    if isinstance(exc, FetchFailed):
        return exc.public
    if isinstance(exc, FfmpegTimedOut):
        return f"transcode_timeout: converting took longer than {exc.timeout_s:g}s (VIDEO_FFMPEG_TIMEOUT_S)"
    if isinstance(exc, SegmentingFailed):
        return "transcode_failed: the source could not be converted to HLS"
    return PROCESSING_FAILED


def is_permanent(exc: BaseException) -> bool:
    """True when another try would meet the same answer (a refused host, a 4xx, a file ffmpeg cannot
    read): the video fails at once instead of using up its retries; `POST .../retry` tries it again."""
    if isinstance(exc, SourceRefused):
        return True
    if isinstance(exc, FetchFailed | SegmentingFailed):
        return exc.permanent
    return False


def public_error(stored: str | None) -> str | None:
    """A stored error as callers see it: ours pass, anything else (older rows) is the generic one."""
    if stored is None or _SAFE.match(stored):
        return stored
    return PROCESSING_FAILED
