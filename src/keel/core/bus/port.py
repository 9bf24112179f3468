"""The bus port: what services and the core need from a broker, nothing more.

Both adapters (`memory`, `kafka`) implement it with the same semantics, proven by one contract suite:
records are partitioned by key, a consumer group shares a topic's partitions among its members,
offsets are committed by hand, and whatever was not committed is delivered again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from keel.core.bus.message import Message, OutgoingMessage, TopicPartition

# Called with the partitions being revoked (before they move) or assigned (after).
RebalanceListener = Callable[[set[TopicPartition]], Awaitable[None]]


class Producer(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, message: OutgoingMessage) -> None:
        """Publish one record and return once the broker acknowledged it."""

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish records (batched by the adapter) and return once every one is acknowledged.

        Raises if any record failed; records are sent in order, so per-key order holds."""


class Consumer(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def getmany(self, timeout_s: float, max_records: int) -> list[Message]:
        """The next records from the assigned partitions, in offset order per partition ([] on timeout)."""

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit, per partition, the offset of the next record to read. Raises if the group moved on."""

    def assignment(self) -> set[TopicPartition]: ...

    def pause(self, partitions: set[TopicPartition]) -> None:
        """Stop fetching from these partitions (a partition waiting on a retry) without leaving the group."""

    def resume(self, partitions: set[TopicPartition]) -> None: ...

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read `tp` from `offset` next (used to redo an uncommitted batch after a failure)."""

    async def lag(self) -> dict[TopicPartition, int]:
        """Messages between the position and the end of each assigned partition."""


class Bus(Protocol):
    name: str

    def producer(self) -> Producer: ...

    def consumer(
        self,
        topics: Sequence[str],
        group_id: str,
        *,
        on_assign: RebalanceListener | None = None,
        on_revoke: RebalanceListener | None = None,
    ) -> Consumer: ...

    async def ensure_topics(self, topics: Sequence[str], partitions: int | None = None) -> None:
        """Create the topics that do not exist yet."""

    async def ping(self) -> None:
        """Raise when the broker cannot be reached (used by /readyz)."""

    async def refusal(self) -> str | None:
        """Why the broker refuses this client, when no retry will fix it (credentials, TLS): one line
        naming the setting. None when it accepts the client or is only unreachable."""

    async def close(self) -> None: ...


BusFactory = Callable[[], Bus]
Partitions = Mapping[str, int]
