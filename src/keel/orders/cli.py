"""`keel orders produce`: publish realistic random orders (and, on request, malformed ones) to Kafka."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from keel.core.bus.message import OutgoingMessage
from keel.core.events import Event, encode
from keel.core.spans import command_trace
from keel.core.telemetry import KEEP_ALL, make_sampler
from keel.orders.fake import bad_message, fake_order
from keel.orders.schemas import ORDER_EVENT
from keel.orders.settings import OrderSettings

app = typer.Typer(help="Order service tools.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)  # never cut at 80 columns in a log file

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


def parse_duration(text: str) -> float:
    """`500ms`, `1.5s`, `2m` or a bare number of seconds → seconds (Go's flag style, as in the seed)."""
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(f"not a duration: {text!r} (try 500ms, 1s, 2m)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def order_record(topic: str, rng: random.Random, bad_rate: float) -> tuple[OutgoingMessage, bool]:
    """The next record to publish and whether it is a good order. Good orders carry the envelope
    fields in headers (wire "bare"); bad ones are raw bytes, as a broken outside producer sends them."""
    if bad_rate > 0 and rng.random() < bad_rate:
        bad = bad_message(rng)
        return OutgoingMessage(topic=topic, value=bad.value, key=bad.key), False
    order = fake_order(rng)
    event = Event(
        ORDER_EVENT, order, key=order["order_uid"], event_id=str(uuid.UUID(int=rng.getrandbits(128)))
    )
    return encode(event, topic, "bare"), True


async def publish(
    brokers: list[str], topic: str, count: int, interval_s: float, bad_rate: float, seed: int | None
) -> tuple[int, int]:

    settings = OrderSettings()
    rng = random.Random(seed)  # test data, not security
    sampler = make_sampler(settings.otel_traces_sampler, settings.otel_traces_sampler_arg, default=KEEP_ALL)
    with command_trace(
        "keel-orders-produce", "orders produce", settings.otel_exporter_otlp_endpoint, sampler
    ):
        return await _publish(settings, rng, brokers, topic, count, interval_s, bad_rate)


async def _publish(
    settings: OrderSettings,
    rng: random.Random,
    brokers: list[str],
    topic: str,
    count: int,
    interval_s: float,
    bad_rate: float,
) -> tuple[int, int]:
    from keel.core.bus.kafka import KafkaBus

    bus = KafkaBus(brokers, idempotence=settings.kafka_idempotence, security=settings.kafka_security())
    good = bad = 0
    try:
        await bus.ensure_topics([topic])
        producer = bus.producer()
        await producer.start()
        try:
            with Progress(
                TextColumn("[bold]orders →[/bold] " + topic),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[bad]} malformed"),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("produce", total=count, bad=0)
                for n in range(count):
                    record, ok = order_record(topic, rng, bad_rate)
                    await producer.send(record)
                    good, bad = good + ok, bad + (not ok)
                    progress.update(task, advance=1, bad=bad)
                    if interval_s > 0 and n + 1 < count:
                        await asyncio.sleep(interval_s)
        finally:
            await producer.stop()
    finally:
        await bus.close()
    return good, bad


@app.command()
def produce(
    n: Annotated[int, typer.Option("-n", min=1, help="how many messages")] = 10,
    interval: Annotated[str, typer.Option(help="pause between messages: 500ms, 1s, 0")] = "500ms",
    brokers: Annotated[str | None, typer.Option(help="host:port,... (default: KAFKA_BROKERS)")] = None,
    topic: Annotated[str | None, typer.Option(help="topic (default: KAFKA_TOPIC, else orders)")] = None,
    bad_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of malformed, invalid or mistyped messages")
    ] = 0.0,
    seed: Annotated[int | None, typer.Option(help="random seed, for a repeatable stream")] = None,
) -> None:
    """Publish random orders in the seed's model (key = order_uid) to the orders topic."""
    # aiokafka would print each failed connect on its own; a broker that stays away ends the command
    # with one line (keel.cli), and one that comes back needs no report.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    settings = OrderSettings()
    broker_list = [b.strip() for b in brokers.split(",") if b.strip()] if brokers else settings.kafka_brokers
    if not broker_list:
        console.print("[red]error:[/red] no brokers: pass --brokers or set KAFKA_BROKERS")
        raise typer.Exit(2)
    interval_s = parse_duration(interval)
    good, bad = asyncio.run(
        publish(broker_list, topic or settings.kafka_topic, n, interval_s, bad_rate, seed)
    )
    console.print(f"published {good} orders and {bad} malformed messages to {topic or settings.kafka_topic}")
