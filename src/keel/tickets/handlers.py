"""The notifications consumer: `ticket.created` / `ticket.closed` on `tickets.events` become rows of
`notifications`, once each (the runner's inbox, plus a unique event id on the row itself)."""

from __future__ import annotations

from keel.core.db import UnitOfWork
from keel.core.events import Event, PoisonMessage
from keel.tickets import repository
from keel.tickets.schemas import TicketEvents

MESSAGES = {
    TicketEvents.CREATED: "Ticket {title!r} was created",
    TicketEvents.CLOSED: "Ticket {ticket_id} was closed",
}


async def notify(event: Event, uow: UnitOfWork) -> None:
    template = MESSAGES.get(event.event_type)
    if template is None:
        return  # other ticket events need no notification
    payload = event.payload
    try:
        ticket_id, user = str(payload["ticket_id"]), str(payload["created_by"])
        message = template.format(title=payload.get("title", ""), ticket_id=ticket_id)
    except KeyError as exc:
        raise PoisonMessage(f"{event.event_type} payload lacks {exc}") from None
    conn = await uow.raw()
    try:
        await conn.execute(
            repository.INSERT_NOTIFICATION, event.event_id, ticket_id, user, event.event_type, message
        )
    except ValueError as exc:  # asyncpg refuses a malformed uuid before sending it
        raise PoisonMessage(f"invalid id in {event.event_type}: {exc}") from None
