"""Backoff with full jitter, and which failures spend a message's attempts."""

from __future__ import annotations

import random

import pytest
import sqlalchemy.exc

from keel.core.bus.errors import BrokerUnavailable
from keel.core.consumer import RetryPolicy, is_transient
from keel.core.settings import Settings


def test_backoff_cap_doubles_from_base_up_to_max() -> None:
    policy = RetryPolicy(max_attempts=5, base_s=0.2, max_s=1.0)

    assert [policy.cap(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_backoff_is_full_jitter_between_zero_and_the_cap() -> None:
    policy = RetryPolicy(base_s=0.5, max_s=4.0)
    rng = random.Random(1)

    delays = [policy.delay(3, rng) for _ in range(2000)]

    assert all(0.0 <= d <= 2.0 for d in delays)
    # Spread over the whole range, not clustered at the cap (that would be no jitter at all).
    assert min(delays) < 0.1 and max(delays) > 1.9


def test_backoff_of_a_partition_stuck_for_days_stays_at_max() -> None:
    policy = RetryPolicy(base_s=0.2, max_s=10.0)

    assert policy.cap(10_000) == 10.0


def test_retry_policy_reads_the_consumer_settings() -> None:
    settings = Settings.model_validate(
        {"consumer_max_attempts": 7, "consumer_backoff_base_s": 0.1, "consumer_backoff_max_s": 3.0}
    )

    assert RetryPolicy.from_settings(settings) == RetryPolicy(max_attempts=7, base_s=0.1, max_s=3.0)


@pytest.mark.parametrize(
    "policy", [{"max_attempts": 0}, {"base_s": 0}, {"base_s": 2.0, "max_s": 1.0}], ids=str
)
def test_retry_policy_refuses_nonsense(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**policy)  # type: ignore[arg-type]


class _Sqlstate(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(),
        TimeoutError(),
        BrokerUnavailable("down"),
        _Sqlstate("40P01"),  # deadlock detected
        _Sqlstate("40001"),  # serialization failure
        _Sqlstate("57P01"),  # admin shutdown
        _Sqlstate("08006"),  # connection failure
        sqlalchemy.exc.DBAPIError("SELECT 1", None, _Sqlstate("22012"), connection_invalidated=True),
    ],
    ids=repr,
)
def test_infrastructure_failures_are_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("bug"),
        KeyError("order_uid"),
        FileNotFoundError("/nope"),
        _Sqlstate("23505"),  # unique violation: the data, not the server
        sqlalchemy.exc.DBAPIError("SELECT 1/0", None, _Sqlstate("22012")),
    ],
    ids=repr,
)
def test_failures_of_the_message_or_the_code_are_not_transient(error: BaseException) -> None:
    assert not is_transient(error)
