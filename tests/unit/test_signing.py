"""Signed links: what verifies, what is refused, and that refusal never becomes an exception."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from keel.core.signing import SignedLink, UrlSigner, VerifyResult

NOW = 1_800_000_000.0
PATH = "/cdn/audio/42"


def signer(secret: str = "s3cret", *, at: float = NOW, **kw) -> UrlSigner:
    return UrlSigner(secret, clock=lambda: at, **kw)


def verify(s: UrlSigner, link: SignedLink) -> VerifyResult:
    return s.verify(link.path, link.exp, link.sig, link.kid)


def test_a_fresh_link_verifies_and_carries_an_8_character_base64url_signature():
    link = signer().sign(PATH, 3600)
    assert link.exp == int(NOW) + 3600
    assert len(link.sig) == 8
    assert set(link.sig) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert verify(signer(), link) is VerifyResult.OK


def test_query_values_arrive_as_strings_and_verify_the_same():
    link = signer().sign(PATH, 60)
    assert signer().verify(link.path, str(link.exp), link.sig, link.kid) is VerifyResult.OK


def test_a_link_without_key_id_is_checked_against_the_current_key():
    link = signer().sign(PATH, 60)
    assert signer().verify(link.path, link.exp, link.sig, None) is VerifyResult.OK


def test_the_url_carries_expiry_key_id_and_signature():
    link = signer().sign(PATH, 60)
    assert link.url("http://cdn/") == f"http://cdn/cdn/audio/42?exp={link.exp}&kid=k1&sig={link.sig}"


def test_the_url_percent_encodes_the_path_that_was_signed_decoded():
    link = signer().sign("/files/routes/аудио 1?.wav", 60)
    assert link.url() == f"/files/routes/%D0%B0%D1%83%D0%B4%D0%B8%D0%BE%201%3F.wav?{link.query}"
    assert verify(signer(), link) is VerifyResult.OK


def _other_char(c: str) -> str:
    return "A" if c != "A" else "B"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda k: ("/cdn/audio/43", k.exp, k.sig),
        lambda k: (k.path, k.exp + 1, k.sig),
        lambda k: (k.path, k.exp, k.sig[:-1]),
        lambda k: (k.path, k.exp, k.sig + "A"),
        lambda k: (k.path, k.exp, ""),
        lambda k: (k.path, k.exp, None),
        lambda k: (k.path, k.exp, "é" * 8),
        lambda k: (k.path, k.exp, k.sig[:-1] + "é"),
        lambda k: (k.path, k.exp, _other_char(k.sig[0]) + k.sig[1:]),
        lambda k: (k.path, k.exp, k.sig.swapcase()),
    ],
    ids=[
        "path",
        "expiry",
        "truncated",
        "extra-char",
        "empty",
        "missing",
        "non-ascii",
        "one-non-ascii-char",
        "one-char",
        "case",
    ],
)
def test_tampered_links_are_refused_as_bad_signature(tamper: Callable[[SignedLink], tuple]):
    link = signer().sign(PATH, 3600)
    path, exp, sig = tamper(link)
    assert signer().verify(path, exp, sig, link.kid) is VerifyResult.BAD_SIGNATURE


def test_a_link_signed_with_another_secret_is_refused():
    link = signer("one").sign("/x", 60)
    assert verify(signer("two"), link) is VerifyResult.BAD_SIGNATURE


@pytest.mark.parametrize("exp", ["", "abc", "-5", "1e9", "٣٣٣", "9" * 13, " 1800000060", None])
def test_a_malformed_expiry_is_refused_as_malformed(exp):
    link = signer().sign("/x", 60)
    assert signer().verify(link.path, exp, link.sig, link.kid) is VerifyResult.MALFORMED


def test_an_expiry_with_leading_zeros_is_another_spelling_and_malformed():
    link = signer().sign("/x", 60)
    assert signer().verify(link.path, f"0{link.exp}", link.sig, link.kid) is VerifyResult.MALFORMED


def test_past_expiry_verifies_within_the_skew_and_is_expired_beyond_it():
    link = signer().sign("/x", 10)
    assert verify(signer(at=NOW + 10 + 30), link) is VerifyResult.OK
    assert verify(signer(at=NOW + 10 + 31), link) is VerifyResult.EXPIRED


def test_a_bad_signature_on_an_expired_link_says_bad_signature_not_expired():
    # Only the holder of a real link may learn that it expired.
    link = signer().sign("/x", 10)
    assert (
        signer(at=NOW + 1000).verify(link.path, link.exp, "AAAAAAAA", link.kid) is VerifyResult.BAD_SIGNATURE
    )


def test_the_previous_secret_verifies_during_rotation_and_new_links_use_the_current_key():
    old = signer("old-secret", key_id="k1").sign("/x", 60)
    rotated = signer("new-secret", key_id="k2", previous={"k1": "old-secret"})
    assert verify(rotated, old) is VerifyResult.OK
    fresh = rotated.sign("/x", 60)
    assert fresh.kid == "k2"
    assert verify(rotated, fresh) is VerifyResult.OK
    assert verify(signer("old-secret", key_id="k1"), fresh) is VerifyResult.BAD_SIGNATURE


def test_an_unknown_key_id_is_refused():
    link = signer().sign("/x", 60)
    assert signer().verify(link.path, link.exp, link.sig, "k9") is VerifyResult.BAD_SIGNATURE


def test_the_key_id_is_signed_so_a_link_cannot_move_to_another_key_with_the_same_secret():
    link = signer("same", key_id="k2", previous={"k1": "same"}).sign("/x", 60)
    both = signer("same", key_id="k2", previous={"k1": "same"})
    assert both.verify(link.path, link.exp, link.sig, "k1") is VerifyResult.BAD_SIGNATURE


def test_a_longer_signature_length_signs_and_verifies():
    s = signer(sig_len=22)  # 132 bits, for links that live long
    link = s.sign("/x", 60)
    assert len(link.sig) == 22
    assert verify(s, link) is VerifyResult.OK
    assert s.verify(link.path, link.exp, link.sig[:8], link.kid) is VerifyResult.BAD_SIGNATURE


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": ""},
        {"secret": "s", "sig_len": 7},
        {"secret": "s", "sig_len": 44},
        {"secret": "s", "key_id": "k1", "previous": {"k1": "old"}},
        {"secret": "s", "previous": {"k0": ""}},
        {"secret": "s", "key_id": "k\n1"},
        {"secret": "s", "skew_s": -1},
    ],
    ids=[
        "empty-secret",
        "short-sig",
        "long-sig",
        "current-kid-in-previous",
        "empty-previous",
        "kid-newline",
        "neg-skew",
    ],
)
def test_a_signer_refuses_unsafe_configuration(kwargs):
    with pytest.raises(ValueError):
        UrlSigner(**kwargs)


@pytest.mark.parametrize("ttl", [0, -1])
def test_signing_refuses_a_ttl_that_is_not_positive(ttl):
    with pytest.raises(ValueError):
        signer().sign("/x", ttl)


def _count(result: VerifyResult) -> float:
    return REGISTRY.get_sample_value("link_verifications_total", {"result": result.value}) or 0.0


def test_every_verification_is_counted_by_result():
    s = signer()
    link = s.sign("/x", 60)
    before = {r: _count(r) for r in VerifyResult}
    s.verify(link.path, link.exp, link.sig, link.kid)
    s.verify(link.path, link.exp, "AAAAAAAA", link.kid)
    s.verify(link.path, link.exp, "é", link.kid)
    s.verify(link.path, "soon", link.sig, link.kid)
    signer(at=NOW + 1000).verify(link.path, link.exp, link.sig, link.kid)
    signer(at=NOW - 4000).verify(link.path, link.exp, link.sig, link.kid)
    assert {r: _count(r) - before[r] for r in VerifyResult} == {
        VerifyResult.OK: 1,
        VerifyResult.BAD_SIGNATURE: 2,
        VerifyResult.MALFORMED: 1,
        VerifyResult.EXPIRED: 1,
        VerifyResult.EXPIRY_TOO_FAR: 1,
    }


VALID = signer().sign("/cdn/audio/7", 3600)
FIELD_VALUES = {
    "path": st.text(max_size=40),
    "exp": st.one_of(st.integers(min_value=-(10**13), max_value=10**13), st.text(max_size=14), st.none()),
    "sig": st.one_of(
        st.text(max_size=12), st.text(alphabet="ABCDEFGHabcdefgh0123456789-_", min_size=8, max_size=8)
    ),
    "kid": st.one_of(st.text(max_size=4), st.none()),
}


@given(data=st.data(), fields=st.sets(st.sampled_from(sorted(FIELD_VALUES)), min_size=1))
def test_any_mutation_of_a_valid_link_is_refused(data, fields):
    original = {"path": VALID.path, "exp": VALID.exp, "sig": VALID.sig, "kid": VALID.kid}
    mutated = dict(original)
    for field in fields:
        mutated[field] = data.draw(FIELD_VALUES[field], label=field)
    # Other spellings of the very same link are not mutations: exp as its decimal string, and no
    # key id (or an empty one) for the current key.
    same_link = (
        mutated["path"] == VALID.path
        and mutated["sig"] == VALID.sig
        and str(mutated["exp"]) == str(VALID.exp)
        and (mutated["kid"] or VALID.kid) == VALID.kid
    )
    assume(not same_link)
    result = signer().verify(mutated["path"], mutated["exp"], mutated["sig"], mutated["kid"])
    assert result is not VerifyResult.OK


@given(
    path=st.text(),
    exp=st.one_of(st.integers(), st.text(), st.none()),
    sig=st.one_of(st.text(), st.none()),
    kid=st.one_of(st.text(), st.none()),
)
def test_verify_answers_any_input_with_a_result_and_never_raises(path, exp, sig, kid):
    assert signer().verify(path, exp, sig, kid) in set(VerifyResult)


@given(
    field=st.sampled_from(["path", "exp", "sig"]),
    position=st.integers(min_value=0, max_value=100),
    replacement=st.characters(),
)
def test_changing_any_one_character_of_a_valid_link_is_refused(field, position, replacement):
    parts = {"path": VALID.path, "exp": str(VALID.exp), "sig": VALID.sig}
    text = parts[field]
    index = position % len(text)
    assume(text[index] != replacement)
    parts[field] = text[:index] + replacement + text[index + 1 :]
    assert signer().verify(parts["path"], parts["exp"], parts["sig"], VALID.kid) is not VerifyResult.OK


@pytest.mark.parametrize("sig_len", [8, 43])
def test_signing_a_page_of_urls_gives_what_signing_each_gives(sig_len):
    s = signer(sig_len=sig_len, key_id="k 2")
    paths = ["/cdn/audio/a1.mp3", "/cdn/audio/ünï cödé.mp3", "/x?y#z"]
    urls = s.sign_urls(paths, 60, "https://cdn.example/")
    assert urls == [s.sign(p, 60).url("https://cdn.example/") for p in paths]
    with pytest.raises(ValueError):
        s.sign_urls(paths, 0)


def test_an_expiry_beyond_the_longest_ttl_plus_skew_is_refused_though_the_signature_is_good():
    issued = signer(at=NOW + 3600 + 30, max_ttl_s=3600).sign(PATH, 3600)  # exp = NOW + 7230
    edge = signer(at=NOW + 30, max_ttl_s=3600).sign(PATH, 3600)  # exp = NOW + 3630: now + TTL + skew
    here = signer(max_ttl_s=3600)
    assert verify(here, edge) is VerifyResult.OK
    assert verify(here, issued) is VerifyResult.EXPIRY_TOO_FAR
    one_more = signer(at=NOW + 31, max_ttl_s=3600).sign(PATH, 3600)
    assert verify(here, one_more) is VerifyResult.EXPIRY_TOO_FAR


def test_the_cap_is_the_longest_ttl_allowed_and_signing_past_it_fails_loudly():
    s = signer(max_ttl_s=600)
    with pytest.raises(ValueError):
        s.sign(PATH, 601)
    with pytest.raises(ValueError):
        s.sign_urls([PATH], 601)
    s.allow_ttl(900)
    s.allow_ttl(300)  # never lowers the cap: another kind of link may still be signed for 900 s
    link = s.sign(PATH, 900)
    assert s.max_ttl_s == 900 and verify(s, link) is VerifyResult.OK
