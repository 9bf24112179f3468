"""Wire models of the orchestrator's HTTP API."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

Status = Literal["pending", "running", "completed", "failed"]


class RestartableStep(StrEnum):
    TTS_BATCH = "tts_batch"


class Step(BaseModel):
    name: str
    status: Status
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


class TtsJob(BaseModel):
    story_id: str
    position: int
    title: str
    status: Status
    attempt: int
    audio_id: str | None
    duration_s: float | None
    error: str | None


class Restart(BaseModel):
    step: str
    attempt: int
    requested_by: str
    reason: str | None
    requested_at: datetime


class Workflow(BaseModel):
    route_id: str
    mode: str
    lang: str
    status: Status
    confirmed_at: datetime
    first_audio_at: datetime | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    steps: list[Step]
    jobs: list[TtsJob]
    restarts: list[Restart]


class RestartRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=500)
