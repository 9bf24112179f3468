"""The order service fixtures (settings, quick group joins, producer): orders are the DLQ source here."""

from tests.integration.orders.conftest import order_settings, producer, quick_group_joins, rng

__all__ = ["order_settings", "producer", "quick_group_joins", "rng"]
