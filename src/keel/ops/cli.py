"""`keel dlq`: list, show, replay and purge dead letters, against Kafka or a platform's `/ops` API."""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from keel.core.settings import Settings
from keel.ops.dlq import BadRequest, UnknownRecord, UnknownTopic
from keel.ops.records import Selection
from keel.ops.session import DeadLetterSession, OpsRefused, open_session

app = typer.Typer(
    help="Dead letters: see why records failed, send them back once fixed.", no_args_is_help=True
)
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
T = TypeVar("T")

BaseUrl = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="a running platform's operator API (how `keel up`'s in-memory bus is reached); default: KAFKA_BROKERS",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="JSON on stdout, for scripts")]
Ids = Annotated[list[str] | None, typer.Option("--id", help="a record, topic/partition/offset (repeatable)")]
Reason = Annotated[str | None, typer.Option("--reason", help="the error type, as `list` shows it")]
Source = Annotated[str | None, typer.Option("--source-topic", help="records that failed on this topic")]


def instant(text: str) -> datetime:
    """An ISO 8601 date or time, as operators write them (`2026-12-01`, `2026-12-01T00:00Z`,
    `2026-12-01 03:00+03:00`); one without an offset is UTC (keel.ops.records.Selection)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 date or time, e.g. 2026-12-01T00:00Z"
        ) from None


Since = Annotated[
    datetime | None,
    typer.Option(
        "--since", parser=instant, metavar="TIME", help="failed at or after (ISO 8601; UTC without an offset)"
    ),
]
Until = Annotated[
    datetime | None,
    typer.Option(
        "--until", parser=instant, metavar="TIME", help="failed before (ISO 8601; UTC without an offset)"
    ),
]
All = Annotated[bool, typer.Option("--all", help="every pending record of the topic")]


def _actor() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} (cli)"


def _run(base_url: str | None, work: Callable[[DeadLetterSession], Awaitable[T]]) -> T:
    async def go() -> T:
        async with open_session(base_url, _actor(), Settings()) as session:
            return await work(session)

    try:
        return asyncio.run(go())
    except (OpsRefused, UnknownRecord, UnknownTopic, BadRequest) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _selection(
    ids: list[str] | None,
    reason: str | None,
    source: str | None,
    since: datetime | None,
    until: datetime | None,
    every: bool,
) -> Selection:
    selection = Selection(
        reason=reason, source_topic=source, since=since, until=until, ids=frozenset(ids) if ids else None
    )
    if not every and selection == Selection():
        console.print(
            "[red]error:[/red] name records (--id) or a filter (--reason, --source-topic, --since, --until), or pass --all"
        )
        raise typer.Exit(2)
    return selection


def _emit(as_json: bool, data: Any) -> bool:
    if as_json:
        out.print_json(json.dumps(data, default=str))
    return as_json


@app.command("list")
def list_(base_url: BaseUrl = None, as_json: AsJson = False) -> None:
    """Per DLQ topic: pending records, oldest and newest, counts by reason and by source topic."""
    summaries = _run(base_url, lambda s: s.summaries())
    if _emit(as_json, summaries):
        return
    table = Table("topic", "pending", "oldest", "newest", "by reason", "by source topic")
    for s in summaries:
        table.add_row(
            s["topic"],
            str(s["pending"]),
            s["oldest"] or "-",
            s["newest"] or "-",
            ", ".join(f"{k} {v}" for k, v in s["by_reason"].items()) or "-",
            ", ".join(f"{k} {v}" for k, v in s["by_source_topic"].items()) or "-",
        )
    out.print(table)


@app.command()
def show(
    record: Annotated[str, typer.Argument(help="topic/partition/offset, as `keel dlq list --json` names it")],
    base_url: BaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """One record: why it failed, where it came from, its key and its payload."""
    view = _run(base_url, lambda s: s.show(record))
    if _emit(as_json, view):
        return
    for name in (
        "id",
        "reason",
        "error",
        "attempts",
        "source_topic",
        "source_partition",
        "source_offset",
        "consumer_group",
        "failed_at",
        "first_failed_at",
        "replay_count",
        "replayed",
        "key",
    ):
        out.print(f"[bold]{name:>16}[/bold] {view[name]}", highlight=False)
    out.print("[bold]         headers[/bold]")
    for k, v in view["headers"].items():
        out.print(f"                  {k}: {v}", highlight=False)
    out.print("[bold]         payload[/bold]")
    out.print(view["payload"] or "(none)", highlight=False, markup=False)


@app.command()
def replay(
    topic: Annotated[str, typer.Argument(help="the DLQ topic")],
    ids: Ids = None,
    reason: Reason = None,
    source_topic: Source = None,
    since: Since = None,
    until: Until = None,
    every: All = False,
    payload_file: Annotated[
        Path | None, typer.Option("--payload-file", help="send this payload instead (one record, --id)")
    ] = None,
    base_url: BaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Send pending dead letters back to their source topic (`replayed-from`, `replay-count` headers).
    Safe to run twice: the mark skips what was replayed, and consumers' inboxes ignore what they handled."""
    selection = _selection(ids, reason, source_topic, since, until, every)
    payload = payload_file.read_bytes() if payload_file is not None else None
    with Progress(
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=as_json,
    ) as bar:
        task = bar.add_task("replay", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = _run(base_url, lambda s: s.replay(topic, selection, payload, progress))
    if not _emit(as_json, result):
        out.print(
            f"replayed {result['count']} record(s) from {topic}; skipped {result['skipped']} already replayed"
        )


@app.command()
def purge(
    topic: Annotated[str, typer.Argument(help="the DLQ topic")],
    ids: Ids = None,
    reason: Reason = None,
    source_topic: Source = None,
    since: Since = None,
    until: Until = None,
    every: All = False,
    delete: Annotated[
        bool, typer.Option("--delete", help="also delete the records below the mark (DeleteRecords)")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    base_url: BaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Move the mark past dead letters without replaying them (they no longer count as pending)."""
    selection = _selection(ids, reason, source_topic, since, until, every)
    if not yes:
        count = _run(base_url, lambda s: s.count(topic, selection))
        typer.confirm(
            f"purge {count} pending record(s) of {topic}{' and delete them' if delete else ''}?", abort=True
        )
    result = _run(base_url, lambda s: s.purge(topic, selection, delete))
    if not _emit(as_json, result):
        out.print(
            f"purged {result['count']} record(s) of {topic}; skipped {result['skipped']} already dealt with"
        )
