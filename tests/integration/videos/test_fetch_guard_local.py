"""The SSRF guard against a real server on 127.0.0.1, through the real HTTP stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.videos.fetch import FetchFailed, GuardedFetcher, SourceRefused
from tests.integration.videos.local_http import Route, local_server


async def test_loopback_url_without_the_allow_list_is_refused_and_never_connected(tmp_path: Path):
    async with local_server({"/v.mp4": Route(body=b"secret")}) as server:
        guarded = GuardedFetcher(max_bytes=1000, timeout_s=5)
        for url in (server.url("/v.mp4"), f"http://localhost:{server.port}/v.mp4"):
            with pytest.raises(SourceRefused):
                await guarded.download(url, tmp_path / "out")
    assert server.connections == 0
    assert not (tmp_path / "out").exists()


async def test_allow_listed_local_server_is_fetched(tmp_path: Path):
    async with local_server({"/v.mp4": Route(body=b"x" * 500)}) as server:
        guarded = GuardedFetcher(allow_hosts={f"127.0.0.1:{server.port}"}, max_bytes=1000, timeout_s=5)
        assert await guarded.download(server.url("/v.mp4"), tmp_path / "out") == 500
    assert (tmp_path / "out").read_bytes() == b"x" * 500


async def test_redirect_from_an_allowed_server_to_the_metadata_address_is_refused(tmp_path: Path):
    routes = {"/v.mp4": Route(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})}
    async with local_server(routes) as server:
        guarded = GuardedFetcher(allow_hosts={f"127.0.0.1:{server.port}"}, max_bytes=1000, timeout_s=5)
        with pytest.raises(SourceRefused, match=r"169\.254\.169\.254"):
            await guarded.download(server.url("/v.mp4"), tmp_path / "out")
    assert server.paths == ["/v.mp4"]  # the hop to the metadata address was never attempted


@pytest.mark.parametrize(("status", "permanent"), [(404, True), (410, True), (429, False), (503, False)])
async def test_a_4xx_answer_is_permanent_and_a_5xx_or_429_is_worth_another_try(
    tmp_path: Path, status: int, permanent: bool
):
    async with local_server({"/v.mp4": Route(status, b"no")}) as server:
        guarded = GuardedFetcher(allow_hosts={f"127.0.0.1:{server.port}"}, max_bytes=1000, timeout_s=5)
        with pytest.raises(FetchFailed) as failed:
            await guarded.download(server.url("/v.mp4"), tmp_path / "out")
    assert failed.value.permanent is permanent
    assert failed.value.public == f"source_http_error: the source answered HTTP {status}"
