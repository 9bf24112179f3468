"""The ticket service through PgBouncer: its API contract (create, get, list, close over HTTP on the
real app) and its pipeline (outbox → relay → Kafka → notifications consumer with its inbox)."""

from __future__ import annotations

from tests.integration.tickets.conftest import (  # noqa: F401 - fixtures
    api_client,
    api_only_app,
    as_user,
    client,
    tickets_app,
    user,
)
from tests.integration.tickets.test_events_pipeline import (  # noqa: F401 - run here through PgBouncer
    test_a_poison_event_on_tickets_events_lands_in_the_dlq,
    test_every_ticket_yields_one_event_and_one_notification_across_restarts,
)
from tests.integration.tickets.test_tickets_api import (  # noqa: F401 - run here through PgBouncer
    test_another_users_ticket_is_403,
    test_close_is_200_and_closing_again_is_200_without_a_second_event,
    test_closing_another_users_ticket_is_403_and_changes_nothing,
    test_concurrent_closes_emit_exactly_one_event,
    test_create_returns_201_with_the_ticket,
    test_create_writes_one_ticket_and_one_outbox_row_in_one_transaction,
    test_get_own_ticket_is_200,
    test_invalid_create_is_422_naming_the_field,
    test_list_is_newest_first_and_filters_by_status,
    test_unknown_or_malformed_id_is_404,
)
