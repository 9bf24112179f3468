"""The SSRF guard against a real server on 127.0.0.1, through the real HTTP stack."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from keel.videos.fetch import MAX_REDIRECTS, FetchFailed, GuardedFetcher, SourceRefused
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


def allowing(server_port: int, *, max_bytes: int = 1000, timeout_s: float = 5) -> GuardedFetcher:
    return GuardedFetcher(allow_hosts={f"127.0.0.1:{server_port}"}, max_bytes=max_bytes, timeout_s=timeout_s)


async def test_a_source_declared_larger_than_the_cap_is_refused_for_good_and_nothing_is_kept(tmp_path: Path):
    async with local_server({"/v.mp4": Route(body=b"x" * 2_000)}) as server:
        with pytest.raises(FetchFailed) as failed:
            await allowing(server.port, max_bytes=1_000).download(server.url("/v.mp4"), tmp_path / "out")
    assert failed.value.permanent
    assert failed.value.public == "source_too_large: the source is larger than 1000 bytes"
    assert not (tmp_path / "out").exists()


async def test_a_redirect_loop_stops_after_the_allowed_hops_for_good(tmp_path: Path):
    async with local_server({"/v.mp4": Route(302, headers={"Location": "/v.mp4"})}) as server:
        with pytest.raises(FetchFailed) as failed:
            await allowing(server.port).download(server.url("/v.mp4"), tmp_path / "out")
    assert failed.value.permanent
    assert failed.value.public == f"source_redirects: more than {MAX_REDIRECTS} redirects"
    assert len(server.paths) == MAX_REDIRECTS + 1


async def test_a_source_slower_than_the_timeout_is_cut_off_and_worth_another_try(tmp_path: Path):
    async with local_server({"/v.mp4": Route(body=b"x", delay_s=5)}) as server:
        began = asyncio.get_running_loop().time()
        with pytest.raises(FetchFailed) as failed:
            await allowing(server.port, timeout_s=0.3).download(server.url("/v.mp4"), tmp_path / "out")
        waited = asyncio.get_running_loop().time() - began
    assert not failed.value.permanent
    assert failed.value.public == "source_timeout: the download took longer than 0.3s"
    assert waited < 3, "cut off at the timeout, not when the source answered"
