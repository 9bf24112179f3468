"""Dead letters: the original record, untouched, with the reason it could not be handled in headers."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from keel.core.bus.message import Message, OutgoingMessage
from keel.core.bus.port import Bus, Producer
from keel.core.events import PoisonMessage
from keel.core.metrics import DLQ_MESSAGES

log = logging.getLogger(__name__)

DLQ_HEADER_PREFIX = "dlq-"
# Enough to read the reason; a traceback-sized message would bloat every dead letter.
MAX_ERROR_CHARS = 1000


def error_text(error: BaseException) -> str:
    text = str(error) or repr(error)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def dead_letter_record(
    message: Message,
    error: BaseException,
    *,
    dlq_topic: str,
    attempts: int,
    group_id: str,
    failed_at: datetime | None = None,
) -> OutgoingMessage:
    """The record to publish to `dlq_topic`: the original key, value and headers, plus dlq-* headers.

    dlq-* headers from an earlier dead-lettering (a replayed dead letter that failed again) are
    replaced, not repeated, so a reader sees one current reason."""
    when = (failed_at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    original = tuple((k, v) for k, v in message.headers if not k.startswith(DLQ_HEADER_PREFIX))
    reason: tuple[tuple[str, bytes], ...] = (
        ("dlq-original-topic", message.topic.encode()),
        ("dlq-original-partition", str(message.partition).encode()),
        ("dlq-original-offset", str(message.offset).encode()),
        ("dlq-error", error_text(error).encode()),
        ("dlq-error-type", type(error).__name__.encode()),
        ("dlq-attempts", str(attempts).encode()),
        ("dlq-consumer-group", group_id.encode()),
        ("dlq-failed-at", when.encode()),
    )
    return OutgoingMessage(topic=dlq_topic, value=message.value, key=message.key, headers=original + reason)


class DeadLetters:
    """Publishes dead letters for one consumer group.

    The producer starts on first use: most consumers never dead-letter anything, and a dead-letter
    broker that is down must not stop good messages from being handled. A failed start or send
    raises, and the caller keeps the source offset uncommitted."""

    def __init__(self, bus: Bus, dlq_topic: str, group_id: str) -> None:
        self._bus = bus
        self.topic = dlq_topic
        self._group_id = group_id
        self._producer: Producer | None = None

    async def publish(self, message: Message, error: BaseException, attempts: int) -> None:
        record = dead_letter_record(
            message, error, dlq_topic=self.topic, attempts=attempts, group_id=self._group_id
        )
        producer = await self._started()
        await producer.send(record)
        reason = "poison" if isinstance(error, PoisonMessage) else "exhausted"
        DLQ_MESSAGES.labels(topic=self.topic, reason=reason).inc()
        log.warning(
            "dead-lettered %s[%d]@%d after %d attempt(s) to %s: %s: %s",
            message.topic,
            message.partition,
            message.offset,
            attempts,
            self.topic,
            type(error).__name__,
            error_text(error),
        )

    async def _started(self) -> Producer:
        if self._producer is None:
            producer = self._bus.producer()
            await producer.start()
            self._producer = producer
        return self._producer

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()
