"""The notifications consumer: `ticket.created` / `ticket.closed` on `tickets.events` become rows of
`notifications`, once each (the runner's inbox, plus a unique event id on the row itself).

A batch handler: the runner claims a whole fetch in the inbox with one statement and this inserts
its notifications with one more, in the same transaction (one commit per fetch instead of per event).
A malformed event fails the batch; the runner then redoes it one event at a time and dead-letters
that one alone."""

from __future__ import annotations

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


class Notification(NamedTuple):
    event_id: uuid.UUID
    ticket_id: uuid.UUID
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
        return Notification(uuid.UUID(event.event_id), uuid.UUID(ticket_id), user, event.event_type, message)
    except ValueError as exc:
        raise PoisonMessage(f"invalid id in {event.event_type}: {exc}") from None


async def notify(events: Sequence[Event], uow: UnitOfWork) -> None:
    rows = [row for row in map(notification, events) if row is not None]
    if not rows:
        return  # other ticket events need no notification
    conn = await uow.raw()
    await conn.execute(repository.INSERT_NOTIFICATIONS, *(list(column) for column in zip(*rows, strict=True)))


NOTIFICATIONS = Batch(notify)
