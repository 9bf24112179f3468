"""PostgreSQL down answers 503 dependency_unavailable, fast (was 500 before 82466a4)."""

from __future__ import annotations

import httpx
import pytest

from tests.chaos.test_postgres_outage import FAST_S, _outage, client, pg_proxy  # noqa: F401
from tests.support.tcp_proxy import Mode, TcpProxy


@pytest.mark.parametrize("fault", ["reset", "blackhole"])
async def test_postgres_down_is_503_dependency_unavailable(
    client: httpx.AsyncClient,  # noqa: F811
    pg_proxy: TcpProxy,  # noqa: F811
    fault: Mode,
) -> None:
    _, answers, _, _ = await _outage(client, pg_proxy, fault)
    got = {name: (r.status_code, r.json()["error"]["code"], round(t, 3)) for name, (r, t) in answers.items()}
    print(f"\npostgres {fault}: {got}")
    assert all(
        status == 503 and code == "dependency_unavailable" and t < FAST_S for status, code, t in got.values()
    ), got
