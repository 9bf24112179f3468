"""The ticket service's own settings (the shared ones live in keel.core.settings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TicketSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Per user, `limits` notation; empty turns rate limiting off.
    tickets_rate_limit: str = Field(default="100/second", validation_alias="TICKETS_RATE_LIMIT")
    max_attachment_bytes: int = Field(default=10 * 1024 * 1024, gt=0, validation_alias="MAX_ATTACHMENT_BYTES")
    # Quotas (docs/security.md): attachments one ticket holds, and bytes of attachments per user.
    attachments_per_ticket: int = Field(default=20, ge=1, validation_alias="ATTACHMENTS_PER_TICKET")
    attachment_bytes_per_user: int = Field(
        default=500 * 1024 * 1024, gt=0, validation_alias="ATTACHMENT_BYTES_PER_USER"
    )
    attachment_link_ttl_s: int = Field(default=900, gt=0, validation_alias="ATTACHMENT_LINK_TTL_S")
