"""The order service's settings keep the seed's names and defaults."""

from __future__ import annotations

import pytest

from keel.orders.cli import parse_duration
from keel.orders.settings import OrderSettings, parse_addr


def test_defaults_are_the_seeds(monkeypatch):
    for name in ("KAFKA_TOPIC", "KAFKA_GROUP_ID", "HTTP_ADDR", "CACHE_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    settings = OrderSettings(_env_file=None)
    assert (settings.kafka_topic, settings.kafka_group_id) == ("orders", "order-svc")
    assert settings.dlq_topic == "orders.dlq"
    assert settings.http_addr == ":8081" and settings.cache_enabled is True


@pytest.mark.parametrize(
    ("value", "enabled"),
    [
        ("0", False),
        ("1", True),
        ("false", False),
        ("true", True),
        ("no", False),
        ("yes", True),
        ("off", False),
        ("on", True),
    ],
)
def test_cache_enabled_accepts_the_seeds_0_1_and_the_other_spellings_of_a_switch(monkeypatch, value, enabled):
    monkeypatch.setenv("CACHE_ENABLED", value)
    assert OrderSettings(_env_file=None).cache_enabled is enabled


def test_pg_url_is_the_database_dsn(monkeypatch):
    for name in ("POSTGRES_DSN", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PG_URL", "postgres://postgres:postgres@localhost:5432/orders?sslmode=disable")
    assert OrderSettings(_env_file=None).postgres_dsn.endswith("/orders?sslmode=disable")


@pytest.mark.parametrize(
    ("addr", "expected"), [(":8081", ("0.0.0.0", 8081)), ("127.0.0.1:9000", ("127.0.0.1", 9000))]
)
def test_http_addr_is_host_and_port_with_an_empty_host_meaning_every_interface(addr, expected):
    assert parse_addr(addr) == expected


@pytest.mark.parametrize("addr", ["8081", ":http", "host:0", ":70000"])
def test_a_malformed_http_addr_is_refused(addr):
    with pytest.raises(ValueError, match="HTTP_ADDR"):
        parse_addr(addr)


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("1s", 1.0), ("1.5s", 1.5), ("2m", 120.0), ("0", 0.0)]
)
def test_producer_intervals_are_read_like_go_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("service", "flags", "env", "expected"),
    [
        ("tickets", (None, None), {}, ("127.0.0.1", 8000)),
        ("orders", (None, None), {}, ("0.0.0.0", 8081)),  # the seed's HTTP_ADDR default, ":8081"
        ("orders", (None, None), {"HTTP_ADDR": "127.0.0.1:9000"}, ("127.0.0.1", 9000)),
        ("orders", ("127.0.0.2", 7000), {"HTTP_ADDR": "127.0.0.1:9000"}, ("127.0.0.2", 7000)),
        ("videos", (None, 8003), {}, ("127.0.0.1", 8003)),
    ],
    ids=["a service", "orders", "orders with HTTP_ADDR", "flags win", "a port alone"],
)
def test_keel_serve_binds_where_the_seeds_say_unless_told_otherwise(
    monkeypatch, service, flags, env, expected
):
    from keel.cli import _serve_address

    monkeypatch.delenv("HTTP_ADDR", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _serve_address(service, *flags) == expected
