"""The order service's settings, under the seed's names (`KAFKA_TOPIC`, `KAFKA_GROUP_ID`, ...)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from keel.core.settings import Settings


class OrderSettings(Settings):
    """The shared settings plus the order service's own; `PG_URL` is read by the shared DSN field."""

    kafka_topic: str = Field(default="orders", min_length=1, validation_alias="KAFKA_TOPIC")
    kafka_group_id: str = Field(default="order-svc", min_length=1, validation_alias="KAFKA_GROUP_ID")
    # The seed's `:8081` (all interfaces); `keel serve orders` binds it unless --host/--port say otherwise.
    http_addr: str = Field(default=":8081", validation_alias="HTTP_ADDR")
    # Accepts 0/1/true/false (and yes/no/on/off), as the seed's `CACHE_ENABLED=0` does.
    cache_enabled: bool = Field(default=True, validation_alias="CACHE_ENABLED")
    order_cache_size: int = Field(default=10_000, ge=1, validation_alias="ORDER_CACHE_SIZE")
    # How many of the most recently written orders are loaded into the cache at start.
    order_cache_warm: int = Field(default=1_000, ge=0, validation_alias="ORDER_CACHE_WARM")
    # Messages per ingest transaction (the consumer's batch).
    order_batch_size: int = Field(default=500, ge=1, validation_alias="ORDER_BATCH_SIZE")

    # Who may read an order (docs/security.md): `none` keeps the seed's public lookup page (an order uid
    # is the capability); `user` answers an order only to the caller whose id is its `customer_id`.
    orders_auth: Literal["none", "user"] = Field(default="none", validation_alias="ORDERS_AUTH")
    # Lookups that find nothing (404, or another customer's order) per client address: what bounds
    # enumerating order uids. Found orders do not count.
    order_miss_limit: str = Field(default="300/minute", validation_alias="ORDER_MISS_LIMIT")
    # Every lookup per user, with ORDERS_AUTH=user (`limits` notation; empty: none).
    order_lookup_limit: str = Field(default="50/second", validation_alias="ORDER_LOOKUP_LIMIT")

    @property
    def dlq_topic(self) -> str:
        return f"{self.kafka_topic}.dlq"


def parse_addr(addr: str) -> tuple[str, int]:
    """`host:port` → (host, port); an empty host (`:8081`, as in Go) means every interface."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"HTTP_ADDR must be host:port or :port, got {addr!r}")
    return (host.strip("[]") or "0.0.0.0"), int(port)
