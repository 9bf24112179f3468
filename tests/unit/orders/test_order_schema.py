"""The order model's validation: strict types, ranges, formats and the cross-field rules."""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson
import pytest

from keel.orders.fake import BAD_KINDS, INVALID, TYPE_MISMATCH, bad_message, fake_order
from keel.orders.schemas import InvalidOrder, order_json, parse_order

SAMPLE: dict[str, Any] = {
    "order_uid": "b563feb7b2b84b6test",
    "track_number": "WBILMTESTTRACK",
    "entry": "WBIL",
    "delivery": {
        "name": "Test Testov",
        "phone": "+9720000000",
        "zip": "2639809",
        "city": "Kiryat Mozkin",
        "address": "Ploshad Mira 15",
        "region": "Kraiot",
        "email": "test@gmail.com",
    },
    "payment": {
        "transaction": "b563feb7b2b84b6test",
        "request_id": "",
        "currency": "USD",
        "provider": "wbpay",
        "amount": 1817,
        "payment_dt": 1637907727,
        "bank": "alpha",
        "delivery_cost": 1500,
        "goods_total": 317,
        "custom_fee": 0,
    },
    "items": [
        {
            "chrt_id": 9934930,
            "track_number": "WBILMTESTTRACK",
            "price": 453,
            "rid": "ab4219087a764ae0btest",
            "name": "Mascaras",
            "sale": 30,
            "size": "0",
            "total_price": 317,
            "nm_id": 2389212,
            "brand": "Vivienne Sabo",
            "status": 202,
        }
    ],
    "locale": "en",
    "internal_signature": "",
    "customer_id": "test",
    "delivery_service": "meest",
    "shardkey": "9",
    "sm_id": 99,
    "date_created": "2021-11-26T06:22:19Z",
    "oof_shard": "1",
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    order = copy.deepcopy(SAMPLE)
    *parents, leaf = path.split(".")
    target: Any = order
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is KeyError:
        del target[leaf]
    else:
        target[leaf] = value
    return order


def refused(order: dict[str, Any]) -> str:
    with pytest.raises(InvalidOrder) as info:
        parse_order(order)
    return str(info.value)


def test_the_seed_sample_order_round_trips_byte_for_byte_in_model_order():
    assert order_json(parse_order(SAMPLE)) == orjson.dumps(SAMPLE)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("sm_id", "99"),  # "123" is not an int
        ("payment.amount", "1817"),
        ("items.0.chrt_id", 9934930.0),
        ("items.0.status", True),  # a bool is not an int either
        ("delivery.zip", 2639809),  # and an int is not a string
        ("order_uid", None),
        ("items", {"0": SAMPLE["items"][0]}),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_not_coerced(path, value):
    assert path.split(".")[-1] in refused(with_change(path, value))


@pytest.mark.parametrize(
    "path", ["order_uid", "delivery", "payment", "items", "date_created", "delivery.email", "items.0.price"]
)
def test_a_missing_required_field_is_refused(path):
    assert "Field required" in refused(with_change(path, KeyError))


@pytest.mark.parametrize(
    "path",
    ["payment.amount", "payment.delivery_cost", "payment.goods_total", "payment.custom_fee", "items.0.price"],
)
def test_negative_money_is_refused(path):
    assert "greater than or equal to 0" in refused(with_change(path, -1))


def test_an_order_without_items_is_refused():
    assert "items" in refused(with_change("items", []))


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "two@@example.com", "space in@example.com", ""])
def test_an_invalid_email_is_refused(email):
    assert "e-mail" in refused(with_change("delivery.email", email))


@pytest.mark.parametrize(
    "date",
    [
        "2021-11-26",
        "2021-11-26T06:22:19",
        "26.11.2021 06:22",
        "2021-13-26T06:22:19Z",
        "2021-11-26T25:00:00Z",
        "",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-05:30",  # after year 9999 in UTC
    ],
)
def test_a_date_that_is_not_rfc3339_is_refused(date):
    assert "date_created" in refused(with_change("date_created", date))


@pytest.mark.parametrize(
    ("path", "value", "served"),
    [
        ("entry", 'q"uo\\te', 'q"uo\\te'),
        ("entry", "\u2028\u2029 </script>", "\u2028\u2029 </script>"),
        ("entry", "\U0001f600 é", "\U0001f600 é"),
        ("entry", "\x01\x1f\x7f\t\n\r\b\f", "\x01\x1f\x7f\t\n\r\b\f"),
        ("items.0.chrt_id", 2**63 - 1, 2**63 - 1),
        ("sm_id", 2**31 - 1, 2**31 - 1),
        ("payment.amount", 0, 0),
        ("date_created", "2021-11-26T09:22:19.5+03:00", "2021-11-26T06:22:19.500000Z"),
        ("date_created", "2021-11-26T06:22:19.000001Z", "2021-11-26T06:22:19.000001Z"),
        ("date_created", "2021-11-26T06:22:19Z", "2021-11-26T06:22:19Z"),
        ("date_created", "9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_an_order_sent_in_any_field_order_is_served_in_model_order_with_its_values(path, value, served):
    # What the database gives back for it is the same bytes (tests/integration/orders/test_repository.py).
    sent = with_change(path, value)
    order = parse_order(dict(reversed(sent.items())))
    assert order_json(order) == orjson.dumps(with_change(path, served))


def test_an_offset_date_is_kept_as_the_same_instant_in_utc():
    order = parse_order(with_change("date_created", "2021-11-26T09:22:19.5+03:00"))
    assert orjson.loads(order_json(order))["date_created"] == "2021-11-26T06:22:19.500000Z"


def test_payment_transaction_must_be_the_order_uid():
    assert "payment.transaction must equal order_uid" in refused(with_change("payment.transaction", "other"))


def test_every_item_must_carry_the_orders_track_number():
    assert "track_number other than the order's" in refused(with_change("items.0.track_number", "WBILOTHER"))


def test_an_unknown_field_is_refused():
    assert "Extra inputs are not permitted" in refused(with_change("surprise", 1))


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("delivery.name", "Te\x00st", "delivery.name: must not contain NUL characters"),
        ("items.0.brand", "\x00", "items.0.brand: must not contain NUL characters"),
        ("payment.request_id", "a\x00", "payment.request_id: must not contain NUL characters"),
        ("order_uid", "b563\x00feb", "order_uid: must not contain whitespace or NUL characters"),
        ("track_number", "WB IL", "track_number: must not contain whitespace or NUL characters"),
        ("delivery.email", "a@b.com\n", "delivery.email: is not a valid e-mail address"),
    ],
)
def test_a_string_rule_is_refused_in_words_not_as_its_pattern(path, value, words):
    # The rules are patterns checked in pydantic-core; the reason names the field and the rule.
    reason = refused(with_change(path, value))
    assert words in reason
    assert "pattern" not in reason


def test_an_id_too_large_for_bigint_is_refused():
    assert "chrt_id" in refused(with_change("items.0.chrt_id", 2**63))


def test_generated_orders_are_valid_and_round_trip():
    rng = random.Random(7)
    for _ in range(200):
        order = fake_order(rng)
        assert orjson.loads(order_json(parse_order(order))) == order


@pytest.mark.parametrize("detail", sorted(INVALID) + sorted(TYPE_MISMATCH))
def test_every_kind_of_generated_bad_order_is_refused(detail):
    rng = random.Random(detail)
    kind = "invalid order" if detail in INVALID else "type mismatch"
    for _ in range(50):
        bad = bad_message(rng, kind)
        if bad.detail == detail:
            break
    else:
        raise AssertionError(f"{detail} not generated")
    with pytest.raises(InvalidOrder):
        parse_order(orjson.loads(bad.value))


def test_generated_malformed_messages_are_not_a_json_object():
    rng = random.Random(3)
    for kind in ("malformed json", "not an object"):
        for _ in range(20):
            value = bad_message(rng, kind).value
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            assert not isinstance(parsed, dict)
    assert set(BAD_KINDS) == {"malformed json", "not an object", "invalid order", "type mismatch"}
