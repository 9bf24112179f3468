"""The ticket list's cache key (docs/seed-differences.md): one segment per page, under the user's prefix,
which is all a create or close invalidates; 60 s."""

from __future__ import annotations

from keel.tickets.schemas import TicketStatus
from keel.tickets.service import LIST_TTL_S, _user_prefix, list_key, list_page


def test_a_page_is_one_segment_under_the_users_prefix() -> None:
    assert list_key("olga", list_page(None, 10, 0)) == "tickets:list:olga:all-10-0"
    assert list_key("olga", list_page(TicketStatus.OPEN, 20, 40)) == "tickets:list:olga:OPEN-20-40"
    assert list_key("olga", list_page(None, 10, 0)).startswith(_user_prefix("olga"))
    assert not list_key("olga-2", list_page(None, 10, 0)).startswith(_user_prefix("olga")), "another user's"
    assert LIST_TTL_S == 60
