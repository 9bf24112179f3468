"""The orchestrator's own settings (the shared ones live in keel.core.settings)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrchestratorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # `GET /workflows/{id}` per user and per client address (`limits` notation; empty: none). The demo
    # and seed 001's operator page poll it a few times a second.
    workflow_read_limit: str = Field(default="20/second", validation_alias="WORKFLOW_READ_LIMIT")
    workflow_read_address_limit: str = Field(
        default="100/second", validation_alias="WORKFLOW_READ_ADDRESS_LIMIT"
    )
