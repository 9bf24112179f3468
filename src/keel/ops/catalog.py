"""Which dead-letter topics and outboxes exist, from each service's own settings (one place to add a
service's DLQ)."""

from __future__ import annotations

from keel.cityguide import topics as cityguide_topics
from keel.tickets.schemas import TicketEvents


def dead_letter_topics() -> list[str]:
    from keel.orders.settings import OrderSettings
    from keel.videos.settings import VideoSettings

    return [TicketEvents.DLQ, OrderSettings().dlq_topic, VideoSettings().dlq_topic, cityguide_topics.DLQ]
