"""The test checker for RFC 8216 media playlists really tells valid from broken."""

from __future__ import annotations

import pytest

from tests.integration.videos.hls_check import parse_media_playlist

VALID = (
    "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
    "#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:10.0,\n42/0.ts\n#EXTINF:10.0,\n42/1.ts\n#EXT-X-ENDLIST\n"
)


def test_checker_accepts_a_complete_vod_media_playlist():
    playlist = parse_media_playlist(VALID)
    assert playlist.version == 3 and playlist.ended and playlist.media_sequence == 0
    assert playlist.segments == [(10.0, "42/0.ts"), (10.0, "42/1.ts")]


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        (lambda t: t.replace("#EXTM3U\n", ""), "starts with #EXTM3U"),
        (lambda t: t.replace("#EXT-X-TARGETDURATION:10\n", ""), "missing required tags"),
        (lambda t: t.replace("#EXTINF:10.0,", "#EXTINF:12.0,", 1), "longer than TARGETDURATION"),
        (lambda t: t.replace("42/0.ts\n", "", 1), "#EXTINF without a URI"),
        (lambda t: t + "42/9.ts\n", "nothing may follow"),
    ],
)
def test_checker_rejects_broken_playlists(broken, why):
    with pytest.raises(AssertionError, match=why):
        parse_media_playlist(broken(VALID))
