"""The generated playlist is valid RFC 8216, and the test checker really tells valid from broken."""

from __future__ import annotations

import pytest

from keel.videos.hls import GENERATED_SEGMENT_S, GENERATED_SEGMENTS, NULL_PACKET, generated_playlist
from tests.integration.videos.hls_check import parse_media_playlist


def test_generated_playlist_is_a_complete_vod_media_playlist():
    playlist = parse_media_playlist(generated_playlist(42))
    assert playlist.version == 3 and playlist.ended and playlist.media_sequence == 0
    assert playlist.target_duration == GENERATED_SEGMENT_S
    assert playlist.segments == [
        (float(GENERATED_SEGMENT_S), f"42/{n}.ts") for n in range(GENERATED_SEGMENTS)
    ]


def test_placeholder_segment_packet_has_mpeg_ts_framing():
    assert len(NULL_PACKET) == 188 and NULL_PACKET[0] == 0x47
    assert ((NULL_PACKET[1] & 0x1F) << 8) | NULL_PACKET[2] == 0x1FFF  # the null PID


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
        parse_media_playlist(broken(generated_playlist(42)))
