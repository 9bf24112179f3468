"""Wire models of the video API and the video service's event map.

Ids are integers (bigint identity), as in the seed's example (`"id": 1`). `title` is trimmed and then
1..255 characters; `url` is an absolute http(s) URL of at most 2048 characters.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AnyUrl, BaseModel, ConfigDict, StringConstraints, UrlConstraints, field_validator

from keel.core.text import NO_NUL

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255), NO_NUL]
MAX_URL = 2048
SourceUrl = Annotated[
    AnyUrl, UrlConstraints(max_length=MAX_URL, allowed_schemes=["http", "https"], host_required=True)
]


class VideoStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class VideoCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title
    url: SourceUrl

    @field_validator("url", mode="before")
    @classmethod
    def _bounded(cls, value: object) -> object:
        # Checked before parsing too: the parser normalises (and may grow) what it is given.
        if isinstance(value, str) and len(value) > MAX_URL:
            raise ValueError(f"url must be at most {MAX_URL} characters")
        return value


class VideoCreated(BaseModel):
    id: int
    title: str
    playlist_url: str


class Video(BaseModel):
    id: int
    title: str
    original_url: str
    playlist_url: str
    # The user who registered it: reads and retries are theirs (and operators').
    owner: str | None = None
    status: VideoStatus
    error: str | None = None
    # HLS jobs started in the current round (since registration or the last retry), and the retries.
    attempts: int = 0
    retries: int = 0
    created_at: datetime
    updated_at: datetime


class VideoEvents:
    """Event types of `videos.events` (topics are settings: VIDEOS_TOPIC, VIDEOS_DLQ_TOPIC)."""

    UPLOADED = "video.uploaded"
