"""HMAC-signed links: `?exp=<unix>&kid=<key id>&sig=<8 chars>` over the key id, the path and the expiry.

The signature is base64url (no padding) of HMAC-SHA256(secret, "kid\\npath\\nexp"), cut to `sig_len`
characters; 8 characters carry 48 bits. A forger who guesses online at 10,000 requests/s needs
~2**47 / 10**4 s ≈ 450 years on average to hit one path and expiry — but only while guesses stay
online and slow: keel.core.link_guard limits failed checks per client (429), and
`link_verifications_total{result="bad_signature"}` is worth an alert (docs/cdn-signed-links.md).
8 hex characters (32 bits) would fall in ~2.5 days at the same rate, which is why the seed's
"8-character signature" is read as base64url here.

Verification never decodes the client's signature (base64 decoders skip invalid characters, so
different strings would verify alike): it encodes ours and compares bytes in constant time. A
non-ASCII or wrong-length signature is BAD_SIGNATURE, never an exception (`hmac.compare_digest`
raises TypeError on a non-ASCII str). The signature is checked before the expiry, so nobody learns
anything about a link they could not have been given; the expiry must be canonical decimal so one
link has one spelling. A small clock skew is allowed. A link whose expiry lies further ahead than the
longest TTL this signer signs for (`max_ttl_s`, plus the skew) is refused even when its signature is
good (EXPIRY_TOO_FAR): no link outlives its TTL, whoever made it. The key id lets old secrets keep verifying
during a rotation; it is covered by the MAC, so a link cannot be moved to another key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, quote_plus

from prometheus_client import Counter

LINK_VERIFICATIONS = Counter("link_verifications_total", "Signed-link verifications", ["result"])
MAX_EXP_DIGITS = 12  # year 33658: anything longer is junk, not a timestamp


class VerifyResult(StrEnum):
    OK = "ok"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    MALFORMED = "malformed"
    EXPIRY_TOO_FAR = "expiry_too_far"


@dataclass(frozen=True, slots=True)
class SignedLink:
    path: str
    exp: int
    kid: str
    sig: str

    @property
    def query(self) -> str:
        # What urlencode() gives (the signature is base64url: nothing to escape), at a fifth of its
        # cost: a prefetch page builds ten of these.
        return f"exp={self.exp}&kid={quote_plus(self.kid)}&sig={self.sig}"

    def url(self, base: str = "") -> str:
        """`base` + the percent-encoded path + the query. The signature covers the decoded path,
        which is what a server sees after routing."""
        return f"{base.rstrip('/')}{quote(self.path, safe='/')}?{self.query}"


def _check_key_id(kid: str) -> str:
    if not kid or not kid.isascii() or not kid.isprintable() or len(kid) > 32:
        raise ValueError(f"key id must be 1..32 printable ASCII characters, got {kid!r}")
    return kid


class UrlSigner:
    """Signs with `secret` under `key_id`; also verifies links signed with the `previous` secrets.

    `max_ttl_s`: the longest TTL it signs for (the seed's LINK_TTL_SEC default unless raised with
    `allow_ttl` by whoever signs longer); verification refuses an expiry beyond now + it + skew."""

    def __init__(
        self,
        secret: str,
        *,
        key_id: str = "k1",
        previous: Mapping[str, str] | None = None,
        sig_len: int = 8,
        skew_s: int = 30,
        max_ttl_s: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        previous = previous or {}
        if not secret or not all(previous.values()):
            raise ValueError("signing secrets must not be empty")
        if key_id in previous:
            raise ValueError(f"key id {key_id!r} is both current and previous")
        if not 8 <= sig_len <= 43:
            raise ValueError("sig_len must be 8..43 base64url characters (48..256 bits)")
        if skew_s < 0:
            raise ValueError("skew_s must be >= 0")
        if max_ttl_s <= 0:
            raise ValueError("max_ttl_s must be positive")
        self._keys = {_check_key_id(k): v.encode() for k, v in {key_id: secret, **previous}.items()}
        self.key_id = key_id
        self.sig_len = sig_len
        self.skew_s = skew_s
        self.max_ttl_s = max_ttl_s
        self._clock = clock

    def allow_ttl(self, ttl_s: int) -> None:
        """Raise the cap to `ttl_s` (never lowers it): called at wiring by each kind of link signed
        with this signer, so the cap is the longest TTL the process hands out."""
        self.max_ttl_s = max(self.max_ttl_s, self._check_ttl(ttl_s))

    def _check_ttl(self, ttl_s: int) -> int:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        return ttl_s

    def _signature(self, key: bytes, kid: str, path: str, exp: int) -> bytes:
        # surrogatepass: a path holding a lone surrogate still has one MAC; verify() must never raise.
        message = f"{kid}\n{path}\n{exp}".encode("utf-8", "surrogatepass")
        mac = hmac.new(key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=")[: self.sig_len]

    def _signable_ttl(self, ttl_s: int) -> int:
        if self._check_ttl(ttl_s) > self.max_ttl_s:
            # Such a link would be refused on arrival: fail where the mistake is made.
            raise ValueError(f"ttl_s {ttl_s} is over this signer's max_ttl_s {self.max_ttl_s} (allow_ttl)")
        return ttl_s

    def sign(self, path: str, ttl_s: int) -> SignedLink:
        self._signable_ttl(ttl_s)
        exp = int(self._clock()) + ttl_s
        sig = self._signature(self._keys[self.key_id], self.key_id, path, exp)
        return SignedLink(path=path, exp=exp, kid=self.key_id, sig=sig.decode())

    def sign_urls(self, paths: Sequence[str], ttl_s: int, base: str = "") -> list[str]:
        """`sign(path, ttl_s).url(base)` for each path, with one clock read and one keyed MAC state
        copied per path (no key schedule per link): a prefetch page signs ten at once."""
        self._signable_ttl(ttl_s)
        kid = self.key_id
        exp = int(self._clock()) + ttl_s
        keyed = hmac.new(self._keys[kid], digestmod=hashlib.sha256)
        head, query = base.rstrip("/"), f"exp={exp}&kid={quote_plus(kid)}&sig="
        urls = []
        for path in paths:
            mac = keyed.copy()
            mac.update(f"{kid}\n{path}\n{exp}".encode("utf-8", "surrogatepass"))
            sig = base64.urlsafe_b64encode(mac.digest())[: self.sig_len].decode()
            urls.append(f"{head}{quote(path, safe='/')}?{query}{sig}")
        return urls

    def verify(
        self, path: str, exp: str | int | None, sig: str | None, kid: str | None = None
    ) -> VerifyResult:
        """Values straight from the query string; a missing `kid` means the current key."""
        result = self._verify(path, exp, sig, kid)
        LINK_VERIFICATIONS.labels(result.value).inc()
        return result

    def _verify(self, path: str, exp: str | int | None, sig: str | None, kid: str | None) -> VerifyResult:
        exp_text = "" if exp is None else str(exp)
        if not (exp_text.isascii() and exp_text.isdigit() and len(exp_text) <= MAX_EXP_DIGITS):
            return VerifyResult.MALFORMED
        expires = int(exp_text)
        if str(expires) != exp_text:  # leading zeros: another spelling of a signed value
            return VerifyResult.MALFORMED
        kid = kid or self.key_id
        key = self._keys.get(kid)
        if key is None or not sig or not sig.isascii() or len(sig) != self.sig_len:
            return VerifyResult.BAD_SIGNATURE
        if not hmac.compare_digest(self._signature(key, kid, path, expires), sig.encode("ascii")):
            return VerifyResult.BAD_SIGNATURE
        now = self._clock()
        if expires + self.skew_s < now:
            return VerifyResult.EXPIRED
        if expires > now + self.max_ttl_s + self.skew_s:
            return VerifyResult.EXPIRY_TOO_FAR
        return VerifyResult.OK
