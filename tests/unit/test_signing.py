"""Signed links: what verifies, what is refused, and that refusal never becomes an exception."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.core.signing import UrlSigner, VerifyResult

NOW = 1_800_000_000.0


def signer(secret: str = "s3cret", **kw) -> UrlSigner:
    return UrlSigner(secret, clock=lambda: NOW, **kw)


def test_a_fresh_link_verifies():
    link = signer().sign("/cdn/audio/42", 3600)
    assert link.exp == int(NOW) + 3600
    assert len(link.sig) == 8
    assert signer().verify(link.path, link.exp, link.sig, link.kid) is VerifyResult.OK


def test_the_url_carries_expiry_key_id_and_signature():
    link = signer().sign("/cdn/audio/42", 60)
    assert link.url("http://cdn") == f"http://cdn/cdn/audio/42?exp={link.exp}&kid=k1&sig={link.sig}"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda k: ("/cdn/audio/43", k.exp, k.sig),
        lambda k: (k.path, k.exp + 1, k.sig),
        lambda k: (k.path, k.exp, k.sig[:-1]),
        lambda k: (k.path, k.exp, k.sig + "A"),
        lambda k: (k.path, k.exp, ""),
        lambda k: (k.path, k.exp, "é" * 8),
        lambda k: (k.path, k.exp, ("A" if k.sig[0] != "A" else "B") + k.sig[1:]),
    ],
    ids=["path", "expiry", "truncated", "extra", "empty", "non-ascii", "one-char"],
)
def test_tampered_links_are_refused_as_bad_signature(tamper):
    link = signer().sign("/cdn/audio/42", 3600)
    path, exp, sig = tamper(link)
    assert signer().verify(path, exp, sig, link.kid) is VerifyResult.BAD_SIGNATURE


def test_wrong_secret_is_refused():
    link = signer("one").sign("/x", 60)
    assert signer("two").verify(link.path, link.exp, link.sig, link.kid) is VerifyResult.BAD_SIGNATURE


@pytest.mark.parametrize("exp", ["", "abc", "-5", "1e9", "٣٣٣", "9" * 13, None])
def test_malformed_expiry_is_refused(exp):
    link = signer().sign("/x", 60)
    assert signer().verify(link.path, exp, link.sig, link.kid) is VerifyResult.MALFORMED


def test_expired_beyond_the_skew_is_expired_and_within_it_ok():
    link = signer().sign("/x", 10)
    later = UrlSigner("s3cret", clock=lambda: NOW + 10 + 31)
    barely = UrlSigner("s3cret", clock=lambda: NOW + 10 + 29)
    assert later.verify(link.path, link.exp, link.sig, link.kid) is VerifyResult.EXPIRED
    assert barely.verify(link.path, link.exp, link.sig, link.kid) is VerifyResult.OK


def test_a_bad_signature_on_an_expired_link_says_bad_signature():
    link = signer().sign("/x", 10)
    later = UrlSigner("s3cret", clock=lambda: NOW + 1000)
    assert later.verify(link.path, link.exp, "AAAAAAAA", link.kid) is VerifyResult.BAD_SIGNATURE


def test_previous_secret_verifies_during_rotation_and_unknown_kid_is_refused():
    old = UrlSigner("old-secret", key_id="k1", clock=lambda: NOW).sign("/x", 60)
    rotated = UrlSigner("new-secret", key_id="k2", previous={"k1": "old-secret"}, clock=lambda: NOW)
    assert rotated.verify(old.path, old.exp, old.sig, old.kid) is VerifyResult.OK
    assert rotated.verify(old.path, old.exp, old.sig, "k9") is VerifyResult.BAD_SIGNATURE
    fresh = rotated.sign("/x", 60)
    assert fresh.kid == "k2"
    assert rotated.verify(fresh.path, fresh.exp, fresh.sig, fresh.kid) is VerifyResult.OK


@given(
    field=st.sampled_from(["path", "exp", "sig"]),
    junk=st.text(min_size=1, max_size=12),
)
def test_any_mutation_of_a_valid_link_is_refused(field, junk):
    s = signer()
    link = s.sign("/cdn/audio/7", 3600)
    parts = {"path": link.path, "exp": str(link.exp), "sig": link.sig}
    parts[field] = parts[field] + junk
    result = s.verify(parts["path"], parts["exp"], parts["sig"], link.kid)
    assert result is not VerifyResult.OK
