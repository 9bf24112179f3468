"""Delivery prefetch's own settings (LINK_TTL_SEC and SECRET are shared: keel.core.settings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeliverySettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # How long a route's ready-audio list lives after its last new audio.
    prefetch_ttl_s: int = Field(default=3600, gt=0, validation_alias="PREFETCH_TTL_SEC")
    # How long this process answers a route's page from memory (0: never). Its own tts.completed drop
    # the route's pages at once; an audio consumed by another replica shows up at most this late.
    page_cache_s: float = Field(default=1.0, ge=0, le=60, validation_alias="PREFETCH_PAGE_CACHE_SEC")
    redis_key_prefix: str = Field(default="keel:", validation_alias="DELIVERY_REDIS_PREFIX")
