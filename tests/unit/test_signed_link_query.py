"""A signed link's query is spelled exactly as urlencode() spells it (the fast f-string must not drift)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from keel.core.signing import UrlSigner


@pytest.mark.parametrize("kid", ["k1", "a&b=c", "key id+/?%"])
def test_the_query_is_what_urlencode_gives(kid):
    link = UrlSigner("s3cret", key_id=kid).sign("/cdn/audio/a0", 60)
    assert link.query == urlencode({"exp": link.exp, "kid": link.kid, "sig": link.sig})
