"""How far a DLQ partition has been dealt with (replayed or purged), kept in Kafka as a committed offset.

The committed offset is the first record not yet dealt with; records beyond it that were replayed on
their own (one record, or a filter that skipped others) are listed in the commit's metadata as
ranges, so a second run skips them too. The metadata stays small: ranges, and a run that deals with
the record at the mark folds every contiguous range into the offset."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

# Kafka's default offset.metadata.max.bytes is 4096: beyond this many ranges the oldest are
# forgotten (those records would be replayed again, which the consumers' inboxes make harmless).
MAX_RANGES = 200


@dataclass
class Mark:
    offset: int
    done: set[int] = field(default_factory=set)

    def covers(self, offset: int) -> bool:
        return offset < self.offset or offset in self.done

    def add(self, offset: int) -> None:
        if offset >= self.offset:
            self.done.add(offset)
        self._fold()

    def advance(self, offset: int) -> None:
        """Everything before `offset` is dealt with."""
        if offset > self.offset:
            self.offset = offset
            self.done = {o for o in self.done if o >= offset}
        self._fold()

    def _fold(self) -> None:
        while self.offset in self.done:
            self.done.discard(self.offset)
            self.offset += 1

    def metadata(self) -> str:
        ranges = _ranges(sorted(self.done))[-MAX_RANGES:]
        return orjson.dumps({"done": ranges}).decode() if ranges else ""

    @classmethod
    def parse(cls, offset: int, metadata: str, first: int) -> Mark:
        """The mark read back; `first` (the first offset kept) when nothing was committed yet, or
        when retention dropped records past it."""
        done: set[int] = set()
        if metadata:
            try:
                for lo, hi in orjson.loads(metadata).get("done", []):
                    done.update(range(int(lo), int(hi) + 1))
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                done = set()  # not ours: the offset alone still holds
        mark = cls(max(offset, first), done)
        mark._fold()
        return mark


def _ranges(offsets: list[int]) -> list[list[int]]:
    ranges: list[list[int]] = []
    for o in offsets:
        if ranges and ranges[-1][1] == o - 1:
            ranges[-1][1] = o
        else:
            ranges.append([o, o])
    return ranges
