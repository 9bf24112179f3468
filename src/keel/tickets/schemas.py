"""Wire models of the ticket API and its events.

Title and description are trimmed of surrounding whitespace before their lengths are checked
(title 3..200, description 1..5000 characters): `"  ab  "` is a 2-character title and is refused.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from keel.core.text import NO_NUL

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=200), NO_NUL]
Description = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=5000), NO_NUL]


class TicketStatus(StrEnum):
    OPEN = "OPEN"
    CLOSED = "CLOSED"


class TicketCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title
    description: Description


class Ticket(BaseModel):
    id: str
    title: str
    description: str
    status: TicketStatus
    created_by: str
    created_at: datetime
    updated_at: datetime


class Attachment(BaseModel):
    id: str
    ticket_id: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    created_at: datetime
    download_url: str = Field(description="Signed or presigned URL; expires after `url_expires_in` seconds")
    url_expires_in: int


class TicketEvents:
    """The ticket service's topics and event types (DESIGN.md)."""

    TOPIC = "tickets.events"
    DLQ = "tickets.dlq"
    CREATED = "ticket.created"
    CLOSED = "ticket.closed"
