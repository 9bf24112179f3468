"""Realistic random orders in the seed's model, and malformed ones to exercise the DLQ — for the
producer CLI, the tests and the demo. Deterministic for a given `random.Random`."""

from __future__ import annotations

import copy
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

FIRST = ("Anna", "Boris", "Daria", "Ivan", "Maria", "Oleg", "Sofia", "Test", "Yuri", "Elena", "Pavel")
LAST = ("Ivanova", "Petrov", "Smirnova", "Kuznetsov", "Testov", "Volkova", "Sokolov", "Novikova")
CITIES = (
    ("Moscow", "Moscow"),
    ("Kazan", "Tatarstan"),
    ("Kiryat Mozkin", "Kraiot"),
    ("Novosibirsk", "Novosibirsk Oblast"),
    ("Saint Petersburg", "Leningrad Oblast"),
    ("Yekaterinburg", "Sverdlovsk Oblast"),
)
STREETS = ("Ploshad Mira", "Lenina", "Tverskaya", "Nevsky prospekt", "Sadovaya", "Gagarina")
DOMAINS = ("gmail.com", "yandex.ru", "mail.ru", "example.org")
PRODUCTS = (
    ("Mascaras", "Vivienne Sabo"),
    ("Running shoes", "Asics"),
    ("Winter jacket", "Columbia"),
    ("Phone case", "Baseus"),
    ("Tea kettle", "Bosch"),
    ("Backpack", "Xiaomi"),
    ("Notebook A5", "Leuchtturm"),
    ("Headphones", "Sony"),
)
SIZES = ("0", "S", "M", "L", "XL", "42", "44")
BANKS = ("alpha", "sber", "tinkoff", "vtb")
SERVICES = ("meest", "cdek", "boxberry", "dpd")
CURRENCIES = ("USD", "EUR", "RUB")


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _upper(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def fake_item(rng: random.Random, track_number: str) -> dict[str, Any]:
    name, brand = rng.choice(PRODUCTS)
    price = rng.randint(100, 20_000)
    sale = rng.choice((0, 0, 10, 15, 30, 50))
    return {
        "chrt_id": rng.randint(1_000_000, 9_999_999),
        "track_number": track_number,
        "price": price,
        "rid": _hex(rng, 21),
        "name": name,
        "sale": sale,
        "size": rng.choice(SIZES),
        "total_price": price * (100 - sale) // 100,
        "nm_id": rng.randint(1_000_000, 9_999_999),
        "brand": brand,
        "status": 202,
    }


def fake_order(
    rng: random.Random,
    *,
    order_uid: str | None = None,
    items: int | None = None,
    created: datetime | None = None,
) -> dict[str, Any]:
    """One valid order: consistent totals, the order's track number on every item, UTC dates."""
    uid = order_uid or _hex(rng, 16) + "test"
    track = "WBIL" + _upper(rng, 10)
    first, last = rng.choice(FIRST), rng.choice(LAST)
    city, region = rng.choice(CITIES)
    lines = [fake_item(rng, track) for _ in range(items or rng.randint(1, 4))]
    goods_total = sum(line["total_price"] for line in lines)
    delivery_cost = rng.choice((0, 300, 500, 1500))
    custom_fee = rng.choice((0, 0, 0, 100))
    when = created or datetime.now(UTC) - timedelta(seconds=rng.randint(0, 86_400))
    return {
        "order_uid": uid,
        "track_number": track,
        "entry": "WBIL",
        "delivery": {
            "name": f"{first} {last}",
            "phone": "+7" + "".join(rng.choice(string.digits) for _ in range(10)),
            "zip": str(rng.randint(100_000, 999_999)),
            "city": city,
            "address": f"{rng.choice(STREETS)} {rng.randint(1, 120)}",
            "region": region,
            "email": f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}",
        },
        "payment": {
            "transaction": uid,
            "request_id": "",
            "currency": rng.choice(CURRENCIES),
            "provider": "wbpay",
            "amount": goods_total + delivery_cost + custom_fee,
            "payment_dt": int(when.timestamp()),
            "bank": rng.choice(BANKS),
            "delivery_cost": delivery_cost,
            "goods_total": goods_total,
            "custom_fee": custom_fee,
        },
        "items": lines,
        "locale": rng.choice(("en", "ru")),
        "internal_signature": "",
        "customer_id": f"customer-{rng.randint(1, 9999)}",
        "delivery_service": rng.choice(SERVICES),
        "shardkey": str(rng.randint(0, 9)),
        "sm_id": rng.randint(1, 200),
        "date_created": rfc3339(when),
        "oof_shard": str(rng.randint(1, 2)),
    }


# --- malformed messages ------------------------------------------------------------------------

Breaker = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Breaker:
    def apply(order: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target: Any = order
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[leaf] = value

    return apply


def _drop(key: str) -> Breaker:
    def apply(order: dict[str, Any]) -> None:
        del order[key]

    return apply


INVALID: dict[str, Breaker] = {
    "negative amount": _set("payment.amount", -1),
    "no items": _set("items", []),
    "bad e-mail": _set("delivery.email", "not-an-email"),
    "bad phone": _set("delivery.phone", "call me maybe"),
    "transaction is not order_uid": _set("payment.transaction", "someone-else"),
    "date is not RFC 3339": _set("date_created", "26.11.2021 06:22"),
    "item of another track": lambda o: o["items"][0].update(track_number="WBILOTHER"),
    "delivery missing": _drop("delivery"),
}
TYPE_MISMATCH: dict[str, Breaker] = {
    "sm_id as a string": lambda o: o.update(sm_id=str(o["sm_id"])),
    "amount as a string": lambda o: o["payment"].update(amount=str(o["payment"]["amount"])),
    "zip as a number": lambda o: o["delivery"].update(zip=int(o["delivery"]["zip"])),
    "price as a float": lambda o: o["items"][0].update(price=o["items"][0]["price"] + 0.5),
    "items as an object": lambda o: o.update(items={"0": o["items"][0]}),
}
BAD_KINDS = ("malformed json", "not an object", "invalid order", "type mismatch")


@dataclass(frozen=True, slots=True)
class BadMessage:
    kind: str
    detail: str
    value: bytes
    key: bytes


def bad_message(rng: random.Random, kind: str | None = None) -> BadMessage:
    """A message the service must dead-letter: broken JSON, not an object, a rule broken, a type wrong."""
    kind = kind or rng.choice(BAD_KINDS)
    order = fake_order(rng)
    key = order["order_uid"].encode()
    if kind == "malformed json":
        text = orjson.dumps(order)
        return BadMessage(kind, "truncated", text[: rng.randint(1, len(text) - 1)], key)
    if kind == "not an object":
        return BadMessage(kind, "a JSON array", orjson.dumps([order["order_uid"]]), key)
    table = INVALID if kind == "invalid order" else TYPE_MISMATCH
    if kind not in ("invalid order", "type mismatch"):
        raise ValueError(f"unknown kind {kind!r}; one of {BAD_KINDS}")
    detail = rng.choice(sorted(table))
    broken = copy.deepcopy(order)
    table[detail](broken)
    return BadMessage(kind, detail, orjson.dumps(broken), key)
