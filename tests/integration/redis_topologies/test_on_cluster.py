"""On a three-master Redis Cluster: the cache contract, rate limits shared by instances, the tickets
service's idempotency keys and list cache, and the delivery pages. Multi-key scripts keep their keys
in one slot with hash tags; a key in the wrong slot would fail here with CROSSSLOT."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.test_cache_contract import *  # noqa: F403
from tests.integration.cityguide.test_ready_audio_store import *  # noqa: F403
from tests.integration.test_ratelimit import *  # noqa: F403
from tests.integration.tickets.conftest import *  # noqa: F403
from tests.integration.tickets.test_idempotency import *  # noqa: F403
from tests.integration.tickets.test_list_cache import *  # noqa: F403
from tests.support.redis_topologies import redis_cluster


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_cluster() as url:
        yield url
