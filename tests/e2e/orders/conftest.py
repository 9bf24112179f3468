"""The order service fixtures of the integration ring (settings, quick group joins, producer)."""

from tests.integration.orders.conftest import order_settings, producer, quick_group_joins, rng

__all__ = ["order_settings", "producer", "quick_group_joins", "rng"]
