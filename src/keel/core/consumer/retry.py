"""When to try a failed message again: exponential backoff with full jitter, and which errors are the
infrastructure's fault (retried without spending the message's attempts) rather than the message's."""

from __future__ import annotations

import random
from dataclasses import dataclass

from keel.core.settings import Settings
from keel.core.transient import is_transient

__all__ = ["RetryPolicy", "is_transient"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a message is tried (`max_attempts`, the first try included) and how long it waits."""

    max_attempts: int = 5
    base_s: float = 0.2
    max_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not 0 < self.base_s <= self.max_s:
            raise ValueError("backoff needs 0 < base_s <= max_s")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.consumer_max_attempts,
            base_s=settings.consumer_backoff_base_s,
            max_s=settings.consumer_backoff_max_s,
        )

    def cap(self, retry: int) -> float:
        """The longest wait before retry number `retry` (1-based): base·2^(retry-1), at most max_s."""
        # The exponent is bounded so a partition stuck for days does not overflow the float.
        return min(self.max_s, self.base_s * float(2 ** min(max(retry - 1, 0), 62)))

    def delay(self, retry: int, rng: random.Random) -> float:
        """Full jitter (uniform in [0, cap]): replicas that failed together do not retry in lockstep."""
        return rng.uniform(0.0, self.cap(retry))
