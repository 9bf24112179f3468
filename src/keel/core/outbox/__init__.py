"""The transactional outbox: `Outbox` writes events in the business transaction, `OutboxRelay`
publishes them and deletes each row the broker acknowledged."""

from keel.core.outbox.relay import OutboxRelay, OutboxStats, RelayOptions, outbox_stats
from keel.core.outbox.writer import OUTBOX_CHANNEL, Outbox, OutboxRow, headers_json, outbox_row, shard_for

__all__ = [
    "OUTBOX_CHANNEL",
    "Outbox",
    "OutboxRelay",
    "OutboxRow",
    "OutboxStats",
    "RelayOptions",
    "headers_json",
    "outbox_row",
    "outbox_stats",
    "shard_for",
]
