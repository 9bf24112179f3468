"""The notifications consumer: `ticket.created` / `ticket.closed` on `tickets.events` become rows of
`notifications`, once each (the runner's inbox, plus a unique event id on the row itself).

A batch handler: the runner claims a whole fetch in the inbox with one statement and this inserts
its notifications with one more, in the same transaction (one commit per fetch instead of per event).
A malformed event fails the batch; the runner then redoes it one event at a time and dead-letters
that one alone."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import NamedTuple

from keel.core.consumer import Batch
from keel.core.db import UnitOfWork
from keel.core.events import Event, PoisonMessage
from keel.tickets import repository
from keel.tickets.schemas import TicketEvents

MESSAGES = {
    TicketEvents.CREATED: "Ticket {title!r} was created",
    TicketEvents.CLOSED: "Ticket {ticket_id} was closed",
}


# A UUID's canonical text goes to the driver as it is (it parses it in C); uuid.UUID, which costs
# several times this match, reads the other forms it accepts (braces, urn:uuid:, no hyphens).
CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def uuid_param(text: str) -> str | uuid.UUID:
    """`text` as a uuid parameter; ValueError when it is no UUID."""
    return text if CANONICAL_UUID.fullmatch(text) else uuid.UUID(text)


class Notification(NamedTuple):
    event_id: str | uuid.UUID
    ticket_id: str | uuid.UUID
    user_id: str
    kind: str
    message: str


def notification(event: Event) -> Notification | None:
    """The notification an event asks for (None: this kind needs none); PoisonMessage if malformed."""
    template = MESSAGES.get(event.event_type)
    if template is None:
        return None
    payload = event.payload
    try:
        ticket_id, user = str(payload["ticket_id"]), str(payload["created_by"])
        message = template.format(title=payload.get("title", ""), ticket_id=ticket_id)
    except KeyError as exc:
        raise PoisonMessage(f"{event.event_type} payload lacks {exc}") from None
    try:
        # Parsed here so a malformed id fails this event, not a statement of the whole batch.
        return Notification(
            uuid_param(event.event_id), uuid_param(ticket_id), user, event.event_type, message
        )
    except ValueError as exc:
        raise PoisonMessage(f"invalid id in {event.event_type}: {exc}") from None


async def notify(events: Sequence[Event], uow: UnitOfWork) -> None:
    rows = [row for row in map(notification, events) if row is not None]
    if not rows:
        return  # other ticket events need no notification
    conn = await uow.raw()
    await conn.execute(repository.INSERT_NOTIFICATIONS, *(list(column) for column in zip(*rows, strict=True)))


NOTIFICATIONS = Batch(notify)
