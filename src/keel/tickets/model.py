"""The ticket domain: a ticket, an attachment, the results the use cases return, and the events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keel.core.events import Event
from keel.tickets.schemas import TicketEvents, TicketStatus


# Serialised by the edge as is (orjson takes dataclasses): the field order is the wire order.
@dataclass(frozen=True, slots=True)
class Ticket:
    id: str
    title: str
    description: str
    status: TicketStatus
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def open(cls, ticket_id: str, title: str, description: str, user: str, now: datetime) -> Ticket:
        return cls(ticket_id, title, description, TicketStatus.OPEN, user, now, now)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ticket:
        """A ticket as the API sent it (an idempotency record holds the first response)."""
        return cls(
            data["id"],
            data["title"],
            data["description"],
            TicketStatus(data["status"]),
            data["created_by"],
            datetime.fromisoformat(data["created_at"]),
            datetime.fromisoformat(data["updated_at"]),
        )


@dataclass(frozen=True, slots=True)
class Attachment:
    id: str
    ticket_id: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    created_at: datetime
    download_url: str
    url_expires_in: int


@dataclass(frozen=True, slots=True)
class StoredAttachment:
    """An attachment's row: where its bytes are, not yet a link to them."""

    id: str
    ticket_id: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    storage_key: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What a key was first used for: the request's hash and the ticket it answered, as JSON."""

    request_hash: str
    response: bytes


@dataclass(frozen=True, slots=True)
class Created:
    ticket: Ticket
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    """A page of a user's tickets, newest first, in the form the list cache keeps: its JSON array.
    Kept encoded because a cached page is served as it is stored (decoding and encoding it again on
    every hit would be the list's largest cost)."""

    json: bytes


def created_event(ticket: Ticket, request_id: str | None) -> Event:
    payload = {
        "ticket_id": ticket.id,
        "created_by": ticket.created_by,
        "title": ticket.title,
        "request_id": request_id,
    }
    return Event(TicketEvents.CREATED, payload, key=ticket.id, created_at=ticket.created_at)


def closed_event(ticket_id: str, user: str, now: datetime, request_id: str | None) -> Event:
    payload = {"ticket_id": ticket_id, "created_by": user, "closed_at": now, "request_id": request_id}
    return Event(TicketEvents.CLOSED, payload, key=ticket_id, created_at=now)
