"""The transactional outbox: `Outbox` writes events in the business transaction, `OutboxRelay`
publishes them, `OutboxRetention` deletes published rows once they are old enough."""

from keel.core.outbox.relay import OutboxRelay, OutboxStats, RelayOptions, outbox_stats
from keel.core.outbox.retention import OutboxRetention, purge_published
from keel.core.outbox.writer import OUTBOX_CHANNEL, Outbox, OutboxRow, headers_json, outbox_row, shard_for

__all__ = [
    "OUTBOX_CHANNEL",
    "Outbox",
    "OutboxRelay",
    "OutboxRetention",
    "OutboxRow",
    "OutboxStats",
    "RelayOptions",
    "headers_json",
    "outbox_row",
    "outbox_stats",
    "purge_published",
    "shard_for",
]
