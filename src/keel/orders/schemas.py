"""The order wire model (the seed's well-known JSON) and its validation: strict types, sane ranges,
and the cross-field rules a consistent order keeps. Field order here is the order on the wire.

The model is typed dicts, not `BaseModel`s: the consumer validates every order it stores, and
pydantic-core builds a validated order as plain dicts faster than it builds nested model
instances — which orjson then writes with no model to walk (bench/results/changes.md,
2026-12-05; pydantic's own performance guide says the same)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    with_config,
)
from pydantic_core import ErrorDetails
from typing_extensions import TypedDict

# The event type of an order message (header `event-type`, or assumed when a producer sends none).
ORDER_EVENT = "order"

MAX_INT = 2**31 - 1  # PostgreSQL integer
MAX_BIGINT = 2**63 - 1  # PostgreSQL bigint
MAX_ITEMS = 1_000
MAX_TEXT = 1_000

# WHATWG's e-mail syntax (what a browser's <input type=email> accepts), with a dot required in the
# domain: strict enough to catch garbage, without the false rejections of a full RFC 5322 parser.
EMAIL = (
    r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+$"
)
# RFC 3339 date-time: a full date, a full time and an offset (Z or ±hh:mm) are all required.
_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$")


# The string rules are patterns, which pydantic-core checks in Rust: a Python validator per field cost
# a fifth of an order's validation, and the consumer validates every order it stores. `_reason` says
# each in words. PostgreSQL text cannot hold NUL: refused here rather than failing (and retried) at
# the insert.
NO_NUL = r"^[^\x00]*$"
ID = r"^[^\s\x00]+$"
_PATTERN_MESSAGES = {
    NO_NUL: "must not contain NUL characters",
    ID: "must not contain whitespace or NUL characters",
    EMAIL: "is not a valid e-mail address",
}


def _rfc3339(value: object) -> object:
    """An RFC 3339 string → an aware datetime in UTC (microsecond precision, as PostgreSQL keeps)."""
    if not isinstance(value, str):
        return value  # left to the strict datetime check, which refuses anything but a datetime
    match = _RFC3339.match(value)
    if match is None:
        raise ValueError("is not an RFC 3339 date-time (e.g. 2021-11-26T06:22:19Z)")
    date, time, fraction, offset = match.groups()
    micros = (fraction or "0")[:6].ljust(6, "0")
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        # astimezone overflows at the calendar's ends (0001-01-01T00:00:00+01:00 is in year 0 in UTC)
        return datetime.fromisoformat(f"{date}T{time}.{micros}{offset}").astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"is not a valid date-time: {exc}") from None


Text = Annotated[str, Field(max_length=MAX_TEXT, pattern=NO_NUL)]
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=ID)]
Email = Annotated[str, Field(max_length=254, pattern=EMAIL)]
Phone = Annotated[str, Field(pattern=r"^\+?[0-9]{7,15}$")]
Money = Annotated[int, Field(ge=0, le=MAX_BIGINT)]
BigId = Annotated[int, Field(ge=0, le=MAX_BIGINT)]
SmallCount = Annotated[int, Field(ge=0, le=MAX_INT)]
Rfc3339 = Annotated[datetime, BeforeValidator(_rfc3339)]


# strict: "123" is not an int and 1 is not a string; forbid: a field we do not know means the producer
# speaks another schema version, and the message goes to the DLQ saying so.
_STRICT = ConfigDict(strict=True, extra="forbid")


@with_config(_STRICT)
class Delivery(TypedDict):
    name: Annotated[Text, Field(min_length=1)]
    phone: Phone
    zip: Text
    city: Annotated[Text, Field(min_length=1)]
    address: Annotated[Text, Field(min_length=1)]
    region: Text
    email: Email


@with_config(_STRICT)
class Payment(TypedDict):
    transaction: Id
    request_id: Text
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    provider: Annotated[Text, Field(min_length=1)]
    amount: Money
    payment_dt: Annotated[int, Field(ge=0, le=MAX_BIGINT, description="Unix time, seconds")]
    bank: Text
    delivery_cost: Money
    goods_total: Money
    custom_fee: Money


@with_config(_STRICT)
class Item(TypedDict):
    chrt_id: BigId
    track_number: Id
    price: Money
    rid: Text
    name: Annotated[Text, Field(min_length=1)]
    sale: Annotated[int, Field(ge=0, le=100, description="Discount, percent")]
    size: Text
    total_price: Money
    nm_id: BigId
    brand: Text
    status: SmallCount


@with_config(_STRICT)
class Order(TypedDict):
    order_uid: Id
    track_number: Id
    entry: Text
    delivery: Delivery
    payment: Payment
    items: Annotated[list[Item], Field(min_length=1, max_length=MAX_ITEMS)]
    locale: Annotated[str, Field(min_length=2, max_length=16, pattern=r"^[A-Za-z_-]+$")]
    internal_signature: Text
    customer_id: Text
    delivery_service: Text
    shardkey: Text
    sm_id: SmallCount
    date_created: Rfc3339
    oof_shard: Text


def _consistent(order: Order) -> Order:
    if order["payment"]["transaction"] != order["order_uid"]:
        raise ValueError("payment.transaction must equal order_uid")
    track_number = order["track_number"]
    wrong = [i for i, item in enumerate(order["items"]) if item["track_number"] != track_number]
    if wrong:
        raise ValueError(f"items {wrong[:10]} have a track_number other than the order's")
    return order


_VALID_ORDER = TypeAdapter(Annotated[Order, AfterValidator(_consistent)])


class InvalidOrder(ValueError):
    """The reason an order was refused, one line per field error (at most a few)."""


def _message(error: ErrorDetails) -> str:
    if error["type"] == "string_pattern_mismatch":
        return _PATTERN_MESSAGES.get(str(error.get("ctx", {}).get("pattern")), error["msg"])
    return error["msg"]


def _reason(exc: ValidationError, limit: int = 5) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'order'}: {_message(e)}" for e in errors[:limit]]
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more


def parse_order(data: dict[str, Any]) -> Order:
    try:
        return _VALID_ORDER.validate_python(data)
    except ValidationError as exc:
        raise InvalidOrder(f"invalid order: {_reason(exc)}") from None


def order_json(order: Order | dict[str, Any]) -> bytes:
    """The order as served: the model's field order (a validated order and one read back from the
    database alike), dates in UTC with `Z`, compact, no escapes but JSON's own. The cache and the
    database answer with the same bytes (tests/unit/orders/test_order_schema.py and the repository's
    round trip check it)."""
    return orjson.dumps(order, option=orjson.OPT_UTC_Z)
