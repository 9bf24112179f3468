"""The TTS worker's settings: engine, voice, and failure injection for exercising restarts."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class TtsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # "espeak": real speech; "instant": silence of the speech's length (benchmarks, no CPU for synthesis).
    tts_mode: Literal["espeak", "instant"] = Field(default="espeak", validation_alias="TTS_MODE")
    tts_voice: str = Field(default="ru", min_length=1, max_length=40, validation_alias="TTS_VOICE")
    # Story ids whose synthesis fails (status "failed") on their first TTS_FAIL_ATTEMPTS attempts.
    tts_fail_stories: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(), validation_alias="TTS_FAIL_STORIES"
    )
    tts_fail_attempts: int = Field(default=1, ge=1, validation_alias="TTS_FAIL_ATTEMPTS")

    @field_validator("tts_fail_stories", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(s.strip() for s in value.split(",") if s.strip())
        return value
