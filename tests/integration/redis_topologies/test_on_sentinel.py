"""Through Sentinels (a primary, a replica, three Sentinels): the cache contract, rate limits shared
by instances and the tickets service's idempotency keys and list cache, with REDIS_URL naming the
Sentinels rather than a server. The failover itself: test_sentinel_failover.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.test_cache_contract import *  # noqa: F403
from tests.integration.test_ratelimit import *  # noqa: F403
from tests.integration.tickets.conftest import *  # noqa: F403
from tests.integration.tickets.test_idempotency import *  # noqa: F403
from tests.integration.tickets.test_list_cache import *  # noqa: F403
from tests.support.redis_topologies import sentinel_group


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with sentinel_group() as group:
        yield group.url
