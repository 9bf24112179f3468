"""What the order ingest's own Python costs per order, in process: each fake order's message decoded
(`keel.core.events.decode`), its inbox key taken (`content_key`), validated (`parse_order`) and
serialised for the database and the cache (`order_json`) — the steps the consumer runs per message
before the batch statement, without the broker, the database or the runner around them. CPU per order
by `time.process_time`, the best of the rounds.

The served row (`BENCH_ONLY=orders-ingest`) adds the runner, the fetch and the statement; to weigh a
change to these steps, run this for the old tree (`PYTHONPATH=<worktree>/src`) and the new in turns.

Run: .venv/bin/python -m bench.ingest_path [--orders 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import random
import time

import orjson

from keel.core.bus.message import Message
from keel.core.events import decode
from keel.orders.fake import fake_order
from keel.orders.handlers import content_key
from keel.orders.schemas import ORDER_EVENT, order_json, parse_order


def messages(count: int) -> list[Message]:
    rng = random.Random(1)
    return [
        Message("orders", 0, n, None, orjson.dumps(fake_order(rng, order_uid=f"path{n:06d}")))
        for n in range(count)
    ]


def per_order_us(batch: list[Message], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for message in batch:
            event = decode(message, "bare", default_type=ORDER_EVENT)
            content_key(event)
            order_json(parse_order(event.payload))
        best = min(best, time.process_time() - started)
    return best / len(batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"{per_order_us(messages(args.orders), args.rounds):.2f} µs CPU per order")


if __name__ == "__main__":
    main()
