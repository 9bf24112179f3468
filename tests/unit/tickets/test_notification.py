"""The notification an event asks for: its ids as the statement takes them, and poison when an id
is no UUID."""

from __future__ import annotations

import uuid

import pytest

from keel.core.events import Event, PoisonMessage
from keel.tickets.handlers import notification
from keel.tickets.schemas import TicketEvents

TICKET = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")


def created(ticket_id: str, event_id: str = "0b8a1bb6-5a5b-4f4e-9d1a-1c2d3e4f5a6b") -> Event:
    payload = {"ticket_id": ticket_id, "created_by": "u-1", "title": "Printer on fire"}
    return Event(TicketEvents.CREATED, payload, event_id=event_id)


@pytest.mark.parametrize(
    "form",
    [
        str(TICKET),
        str(TICKET).upper(),
        "{" + str(TICKET) + "}",
        "urn:uuid:" + str(TICKET),
        TICKET.hex,
    ],
)
def test_every_form_uuid_reads_names_the_same_ticket(form: str) -> None:
    row = notification(created(form))

    assert row is not None
    assert uuid.UUID(str(row.ticket_id)) == TICKET
    assert row.message == "Ticket 'Printer on fire' was created"


def test_canonical_ids_go_to_the_statement_as_text() -> None:
    row = notification(created(str(TICKET)))

    assert row is not None
    assert (row.event_id, row.ticket_id) == ("0b8a1bb6-5a5b-4f4e-9d1a-1c2d3e4f5a6b", str(TICKET))


@pytest.mark.parametrize("bad", ["not-a-uuid", str(TICKET) + "0", str(TICKET)[:-1] + "g", ""])
def test_an_id_that_is_no_uuid_is_poison(bad: str) -> None:
    with pytest.raises(PoisonMessage, match="invalid id"):
        notification(created(bad))
    with pytest.raises(PoisonMessage, match="invalid id"):
        notification(created(str(TICKET), event_id=bad))
