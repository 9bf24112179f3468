"""Wire models of the operator API's requests."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from keel.ops.records import Selection


class DeadLetterSelection(BaseModel):
    """Which pending dead letters to take: ids, or filters, or `all`; an empty selection is refused."""

    ids: list[str] | None = Field(default=None, description="records as topic/partition/offset")
    reason: str | None = Field(default=None, description="the error type, as the list counts it")
    source_topic: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    all: bool = False

    def selection(self) -> Selection:
        return Selection(
            reason=self.reason,
            source_topic=self.source_topic,
            since=self.since,
            until=self.until,
            ids=frozenset(self.ids) if self.ids else None,
        )

    def is_empty(self) -> bool:
        return not self.all and self.selection() == Selection()


class ReplayRequest(DeadLetterSelection):
    payload: str | None = Field(
        default=None, description="replaces the payload of the one record named in `ids` (a fix in the data)"
    )


class PurgeRequest(DeadLetterSelection):
    delete: bool = Field(default=False, description="also delete the records below the mark (DeleteRecords)")


class WorkflowRestart(BaseModel):
    reason: str | None = Field(default=None, max_length=500)
