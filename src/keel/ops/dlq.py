"""Dead-letter operations on any bus: list, show, replay, purge.

The state lives in the broker, not in a mirror table: per DLQ topic a consumer group that nobody
consumes with (`keel-dlq-mark.<topic>`) holds the mark (keel.ops.marks) of how far its records were
replayed or purged, so `pending` counts the records past the mark. A replay sends first and moves the mark
after the acks: a run cut in between sends those records again on the next run, and the consumers'
inboxes make a second delivery of an event they already handled a no-op."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.core.bus.kafka import is_dead_letter_topic
from keel.core.bus.message import Message, TopicPartition
from keel.core.bus.port import Producer
from keel.core.errors import NotFound, Unprocessable
from keel.ops.audit import Audit
from keel.ops.marks import Mark
from keel.ops.metrics import DLQ_PENDING, DLQ_REPLAYED
from keel.ops.records import UNKNOWN, DeadLetter, Selection, parse_record_id
from keel.ops.topics import TopicAdmin

MARK_GROUP_PREFIX = "keel-dlq-mark."
SEND_CHUNK = 200
Progress = Callable[[int, int], None]  # (records dealt with so far, records selected)


# Domain errors the API maps to its envelope (404, 422) and the CLI prints in one line.
class UnknownRecord(NotFound):
    pass


class UnknownTopic(NotFound):
    pass


class BadRequest(Unprocessable):
    pass


def mark_group(topic: str) -> str:
    return MARK_GROUP_PREFIX + topic


@dataclass
class Outcome:
    """What a replay or purge did: the records it sent (or purged) and those the mark said were done."""

    action: str
    topic: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted_before: dict[int, int] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "topic": self.topic,
            "count": len(self.done),
            "skipped": len(self.skipped),
            "records": self.done,
            "deleted_before": {str(p): o for p, o in self.deleted_before.items()},
        }


@dataclass
class _Partition:
    tp: TopicPartition
    first: int
    end: int
    mark: Mark


class DeadLetterOps:
    def __init__(
        self, admin: TopicAdmin, producer: Producer, topics: Sequence[str], audit: Audit | None = None
    ) -> None:
        self._admin = admin
        self._producer = producer
        self.topics = list(dict.fromkeys(topics))
        self._audit = audit

    def _check(self, topic: str) -> None:
        if topic not in self.topics and not is_dead_letter_topic(topic):
            raise UnknownTopic(f"{topic!r} is not a dead-letter topic; known: {', '.join(self.topics)}")

    async def _partitions(self, topic: str) -> list[_Partition]:
        offsets = await self._admin.partition_offsets(topic)
        committed = await self._admin.group_offsets(mark_group(topic)) if offsets else {}
        parts = []
        for partition, (first, end) in sorted(offsets.items()):
            tp = TopicPartition(topic, partition)
            offset, metadata = committed.get(tp, (first, ""))
            parts.append(_Partition(tp, first, end, Mark.parse(offset, metadata, first)))
        return parts

    async def _letters(self, part: _Partition, *, pending_only: bool) -> list[DeadLetter]:
        start = part.mark.offset if pending_only else part.first
        letters = [DeadLetter(m) for m in await self._admin.read(part.tp, start, part.end)]
        return [d for d in letters if not (pending_only and part.mark.covers(d.message.offset))]

    async def summary(self, topic: str) -> dict[str, Any]:
        """Count, oldest and newest, and counts by reason and by source topic of the pending records."""
        self._check(topic)
        parts = await self._partitions(topic)
        pending = [d for p in parts for d in await self._letters(p, pending_only=True)]
        DLQ_PENDING.labels(topic=topic).set(len(pending))
        times = sorted(d.failed_at for d in pending)
        return {
            "topic": topic,
            "pending": len(pending),
            "kept": sum(p.end - p.first for p in parts),
            "oldest": times[0].isoformat() if times else None,
            "newest": times[-1].isoformat() if times else None,
            "by_reason": dict(Counter(d.reason for d in pending).most_common()),
            "by_source_topic": dict(Counter(d.source_topic for d in pending).most_common()),
            "marks": {str(p.tp.partition): p.mark.offset for p in parts},
        }

    async def pending_count(self, topic: str) -> int:
        """Records past the mark, from offsets alone (no record read): what the gauge exports."""
        parts = await self._partitions(topic)
        count = sum(max(0, p.end - p.mark.offset) - sum(1 for o in p.mark.done if o < p.end) for p in parts)
        DLQ_PENDING.labels(topic=topic).set(count)
        return count

    async def summaries(self) -> list[dict[str, Any]]:
        return [await self.summary(t) for t in self.topics]

    async def records(
        self, topic: str, selection: Selection = Selection(), *, include_done: bool = False, limit: int = 200
    ) -> list[dict[str, Any]]:
        self._check(topic)
        views: list[dict[str, Any]] = []
        for part in await self._partitions(topic):
            for letter in await self._letters(part, pending_only=not include_done):
                if selection.matches(letter):
                    views.append(letter.view(replayed=part.mark.covers(letter.message.offset)))
        views.sort(key=lambda v: v["failed_at"], reverse=True)
        return views[:limit]

    async def show(self, record: str) -> dict[str, Any]:
        topic, partition, offset = parse_record_id(record)
        self._check(topic)
        for part in await self._partitions(topic):
            if part.tp.partition == partition:
                found = await self._admin.read(part.tp, offset, offset + 1)
                if found:
                    return DeadLetter(found[0]).view(replayed=part.mark.covers(offset))
        raise UnknownRecord(f"no record {record} (never written, or past retention)")

    async def replay(
        self,
        topic: str,
        selection: Selection,
        *,
        actor: str,
        payload: bytes | None = None,
        progress: Progress | None = None,
    ) -> Outcome:
        """Send the selected pending records back to their source topics and move the mark past them.
        `payload` replaces the value of the one record selected by id (a fix in the data)."""
        self._check(topic)
        if payload is not None and (selection.ids is None or len(selection.ids) != 1):
            raise BadRequest("an edited payload replays exactly one record, named by its id")
        outcome = Outcome("replay", topic)
        parts = await self._partitions(topic)
        chosen = await self._choose(parts, selection, outcome)
        nowhere = [d.id for _, letters in chosen for d in letters if d.source_topic == UNKNOWN]
        if nowhere:
            raise BadRequest(f"no dlq-original-topic header, nowhere to replay to: {', '.join(nowhere[:5])}")
        total, sent = sum(len(c) for _, c in chosen), 0
        for part, letters in chosen:
            for start in range(0, len(letters), SEND_CHUNK):
                chunk = letters[start : start + SEND_CHUNK]
                await self._producer.send_many([d.replay(payload) for d in chunk])
                for letter in chunk:
                    part.mark.add(letter.message.offset)
                # The mark moves only after the broker acknowledged the records it covers.
                await self._commit([part])
                outcome.done += [d.id for d in chunk]
                sent += len(chunk)
                DLQ_REPLAYED.labels(topic=topic).inc(len(chunk))
                if progress is not None:
                    progress(sent, total)
        detail = {
            "selection": selection.describe(),
            "edited_payload": payload is not None,
            "skipped": len(outcome.skipped),
        }
        await self._record(actor, outcome, detail)
        return outcome

    async def purge(self, topic: str, selection: Selection, *, actor: str, delete: bool = False) -> Outcome:
        """Move the mark past the selected records without sending them; `delete` also deletes each
        partition's prefix below its mark from the log (DeleteRecords)."""
        self._check(topic)
        outcome = Outcome("purge", topic)
        parts = await self._partitions(topic)
        for part, letters in await self._choose(parts, selection, outcome):
            for letter in letters:
                part.mark.add(letter.message.offset)
            outcome.done += [d.id for d in letters]
        await self._commit(parts)
        if delete:
            prefixes = {p.tp: p.mark.offset for p in parts if p.mark.offset > p.first}
            await self._admin.delete_before(prefixes)
            outcome.deleted_before = {tp.partition: o for tp, o in prefixes.items()}
        detail = {"selection": selection.describe(), "deleted_before": outcome.view()["deleted_before"]}
        await self._record(actor, outcome, detail)
        return outcome

    async def _choose(
        self, parts: list[_Partition], selection: Selection, outcome: Outcome
    ) -> list[tuple[_Partition, list[DeadLetter]]]:
        chosen = []
        for part in parts:
            letters = []
            for message in await self._candidates(part, selection):
                letter = DeadLetter(message)
                if not selection.matches(letter):
                    continue
                if part.mark.covers(message.offset):
                    outcome.skipped.append(letter.id)
                else:
                    letters.append(letter)
            chosen.append((part, letters))
        if selection.ids is not None:
            found = {d.id for _, letters in chosen for d in letters} | set(outcome.skipped)
            missing = sorted(selection.ids - found)
            if missing:
                raise UnknownRecord(f"no record {', '.join(missing)} (never written, or past retention)")
        return chosen

    async def _candidates(self, part: _Partition, selection: Selection) -> list[Message]:
        """The records past the mark; or, for records named by id, those alone (wherever they are)."""
        if selection.ids is None:
            return await self._admin.read(part.tp, part.mark.offset, part.end)
        offsets = sorted(
            offset
            for topic, partition, offset in map(parse_record_id, selection.ids)
            if (topic, partition) == part.tp and part.first <= offset < part.end
        )
        return [m for offset in offsets for m in await self._admin.read(part.tp, offset, offset + 1)]

    async def _commit(self, parts: list[_Partition]) -> None:
        if parts:
            marks = {p.tp: (p.mark.offset, p.mark.metadata()) for p in parts}
            await self._admin.set_group_offsets(mark_group(parts[0].tp.topic), marks)

    async def _record(self, actor: str, outcome: Outcome, detail: dict[str, Any]) -> None:
        if self._audit is not None and (outcome.done or outcome.deleted_before):
            await self._audit.record(actor, outcome.action, outcome.topic, len(outcome.done), detail)

    async def audit(self) -> list[dict[str, Any]]:
        return await self._audit.recent() if self._audit is not None else []
