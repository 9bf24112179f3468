"""Wire models of the delivery prefetch API."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PrefetchItem(BaseModel):
    audio_id: str
    story_id: str
    url: str = Field(description="Signed CDN link: `?exp=<unix>&kid=<key id>&sig=<8 characters>`")
    ttl: int = Field(description="Seconds the link stays valid")
    duration_s: float | None


class Prefetch(BaseModel):
    route_id: str
    items: list[PrefetchItem]
