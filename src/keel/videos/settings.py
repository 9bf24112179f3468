"""The video service's own settings (the shared ones live in keel.core.settings)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from keel.videos.fetch import parse_allow_entry


class VideoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # "generated": no source download, the bundled ffmpeg makes a short test clip with the title on it;
    # "ffmpeg": download the source (through the SSRF guard) and segment it.
    hls_mode: Literal["generated", "ffmpeg"] = Field(default="generated", validation_alias="HLS_MODE")
    # The font file of the title drawn on generated clips; unset: the first common system font found.
    title_font: str | None = Field(default=None, validation_alias="VIDEO_TITLE_FONT")
    # host:port entries (names or IP literals) the fetcher may reach although not public, e.g.
    # "127.0.0.1:8080"; a bare host admits only the scheme's default port (80/443).
    fetch_allow_hosts: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(), validation_alias="VIDEO_FETCH_ALLOW_HOSTS"
    )
    fetch_max_bytes: int = Field(default=200 * 1024 * 1024, gt=0, validation_alias="VIDEO_FETCH_MAX_BYTES")
    fetch_timeout_s: float = Field(default=60.0, gt=0, validation_alias="VIDEO_FETCH_TIMEOUT_S")
    ffmpeg_timeout_s: float = Field(default=300.0, gt=0, validation_alias="VIDEO_FFMPEG_TIMEOUT_S")
    # The Redis namespace (keel:cache:<name>:) and the `cache` label of cache_requests_total.
    cache_name: str = Field(default="videos", min_length=1, validation_alias="VIDEOS_CACHE_NAME")
    cache_ttl_s: float = Field(default=300.0, gt=0, validation_alias="VIDEOS_CACHE_TTL_S")
    # A row in `processing` longer than this is taken back by the reaper (the job is presumed dead).
    processing_timeout_s: float = Field(default=900.0, gt=0, validation_alias="VIDEOS_PROCESSING_TIMEOUT_S")
    reaper_interval_s: float = Field(default=30.0, gt=0, validation_alias="VIDEOS_REAPER_INTERVAL_S")
    # Creates per user and per client address (`limits` notation; empty: none), and the quota of
    # videos a user may register per hour: each one is a download and an ffmpeg job.
    create_limit: str = Field(default="20/minute", validation_alias="VIDEO_CREATE_LIMIT")
    create_address_limit: str = Field(default="60/minute", validation_alias="VIDEO_CREATE_ADDRESS_LIMIT")
    videos_per_user_per_hour: int = Field(default=100, ge=0, validation_alias="VIDEOS_PER_USER_PER_HOUR")
    topic: str = Field(default="videos.events", validation_alias="VIDEOS_TOPIC")
    dlq_topic: str = Field(default="videos.dlq", validation_alias="VIDEOS_DLQ_TOPIC")
    group_id: str = Field(default="videos-hls", validation_alias="VIDEOS_GROUP_ID")

    @field_validator("fetch_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = [h for h in value.split(",") if h.strip()]
        if isinstance(value, list | set | frozenset):
            for entry in value:
                parse_allow_entry(entry)  # a malformed entry fails at start, naming it
            return frozenset(str(h).strip().lower() for h in value)
        return value
