"""A dead letter as an operator sees it (reason, source, attempts, payload), the filters that pick
dead letters, and the record a replay sends back to the source topic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from keel.core.bus.message import Message, OutgoingMessage
from keel.core.consumer.dlq import DLQ_HEADER_PREFIX

REPLAYED_FROM = "replayed-from"
REPLAY_COUNT = "replay-count"
# The dlq-* headers are replaced each time a record is dead-lettered; this one, set by the first
# replay, keeps when the record first failed.
FIRST_FAILED_AT = "first-failed-at"
UNKNOWN = "unknown"


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def record_id(topic: str, partition: int, offset: int) -> str:
    """How a record is named on the command line and in URLs: `topic/partition/offset`."""
    return f"{topic}/{partition}/{offset}"


def parse_record_id(text: str) -> tuple[str, int, int]:
    topic, _, rest = text.rpartition("/")
    topic, _, partition = topic.rpartition("/")
    if not topic or not partition.isdigit() or not rest.isdigit():
        raise ValueError(f"a record id is topic/partition/offset, not {text!r}")
    return topic, int(partition), int(rest)


@dataclass(frozen=True)
class DeadLetter:
    message: Message

    @property
    def id(self) -> str:
        m = self.message
        return record_id(m.topic, m.partition, m.offset)

    @property
    def reason(self) -> str:
        """The error's type (PoisonMessage, a handler's exception): what `list` counts by."""
        return _text(self.message.header("dlq-error-type")) or UNKNOWN

    @property
    def source_topic(self) -> str:
        return _text(self.message.header("dlq-original-topic")) or UNKNOWN

    @property
    def failed_at(self) -> datetime:
        text = _text(self.message.header("dlq-failed-at"))
        if text:
            try:
                return datetime.fromisoformat(text)
            except ValueError:
                pass
        return datetime.fromtimestamp(self.message.timestamp_ms / 1000, UTC)

    @property
    def first_failed_at(self) -> str:
        return _text(self.message.header(FIRST_FAILED_AT)) or self.failed_at.isoformat()

    @property
    def replay_count(self) -> int:
        text = _text(self.message.header(REPLAY_COUNT)) or "0"
        return int(text) if text.isdigit() else 0

    def view(self, *, replayed: bool) -> dict[str, Any]:
        m = self.message
        return {
            "id": self.id,
            "topic": m.topic,
            "partition": m.partition,
            "offset": m.offset,
            "reason": self.reason,
            "error": _text(m.header("dlq-error")),
            "attempts": int(_text(m.header("dlq-attempts")) or 0),
            "source_topic": self.source_topic,
            "source_partition": _int(m.header("dlq-original-partition")),
            "source_offset": _int(m.header("dlq-original-offset")),
            "consumer_group": _text(m.header("dlq-consumer-group")),
            "failed_at": self.failed_at.isoformat(),
            "first_failed_at": self.first_failed_at,
            "replay_count": self.replay_count,
            "replayed": replayed,
            "key": _text(m.key),
            "headers": {k: _text(v) for k, v in m.headers},
            "payload": pretty_payload(m.value),
        }

    def replay(self, value: bytes | None = None) -> OutgoingMessage:
        """The original record again, to its source topic: its own headers (event id, trace context,
        so the inbox recognises it) without the dlq-* ones, plus where it came from and how many
        times it was replayed. `value` replaces the payload (a fix in the data)."""
        m = self.message
        kept = tuple(
            (k, v) for k, v in m.headers if not k.startswith(DLQ_HEADER_PREFIX) and k not in _REPLAY_HEADERS
        )
        added = (
            (REPLAYED_FROM, self.id.encode()),
            (REPLAY_COUNT, str(self.replay_count + 1).encode()),
            (FIRST_FAILED_AT, self.first_failed_at.encode()),
        )
        return OutgoingMessage(
            topic=self.source_topic,
            value=m.value if value is None else value,
            key=m.key,
            headers=kept + added,
        )


_REPLAY_HEADERS = frozenset({REPLAYED_FROM, REPLAY_COUNT, FIRST_FAILED_AT})


def _int(value: bytes | None) -> int | None:
    text = _text(value)
    return int(text) if text and text.lstrip("-").isdigit() else None


def pretty_payload(value: bytes | None) -> str | None:
    """JSON indented; anything else as text (a poison record may be any bytes)."""
    if value is None:
        return None
    try:
        return orjson.dumps(orjson.loads(value), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return value.decode("utf-8", "replace")


@dataclass(frozen=True)
class Selection:
    """Which dead letters a replay or purge takes; every field left None matches everything."""

    reason: str | None = None
    source_topic: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: frozenset[str] | None = None

    def __post_init__(self) -> None:
        # A time without an offset is UTC, as the records' failure times are (an operator's
        # `--since 2026-12-01`, an API query without one): a naive time cannot be compared with them.
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                object.__setattr__(self, name, value.replace(tzinfo=UTC))

    def matches(self, letter: DeadLetter) -> bool:
        if self.ids is not None and letter.id not in self.ids:
            return False
        if self.reason is not None and letter.reason != self.reason:
            return False
        if self.source_topic is not None and letter.source_topic != self.source_topic:
            return False
        when = letter.failed_at
        if self.since is not None and when < self.since:
            return False
        return self.until is None or when < self.until

    def describe(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "source_topic": self.source_topic,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "ids": sorted(self.ids) if self.ids is not None else None,
        }
