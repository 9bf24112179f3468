"""The ticket service's own settings (the shared ones live in keel.core.settings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TicketSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Per user, `limits` notation; empty turns rate limiting off.
    tickets_rate_limit: str = Field(default="100/second", validation_alias="TICKETS_RATE_LIMIT")
    max_attachment_bytes: int = Field(default=10 * 1024 * 1024, gt=0, validation_alias="MAX_ATTACHMENT_BYTES")
    attachment_link_ttl_s: int = Field(default=900, gt=0, validation_alias="ATTACHMENT_LINK_TTL_S")
