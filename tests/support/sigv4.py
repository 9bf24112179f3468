"""A reference check of S3 presigned GET URLs (SigV4 query auth), computed with botocore's signer.

moto's server serves any presigned URL, expired or tampered; S3 and MinIO refuse both. This applies
their rules to a URL: the signature must match the one recomputed over the URL as given, and the
request must come before X-Amz-Date + X-Amz-Expires.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

MAX_EXPIRES_S = 7 * 24 * 3600  # S3 refuses presigned URLs that claim more than a week


class Presigned(StrEnum):
    OK = "ok"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"


def signed_at(url: str) -> datetime:
    stamp = dict(parse_qsl(urlsplit(url).query))["X-Amz-Date"]
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def check_presigned_get(url: str, secret_access_key: str, *, now: datetime) -> Presigned:
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    query = dict(params)
    expires = int(query["X-Amz-Expires"])
    access_key, _, region, service, _ = query["X-Amz-Credential"].split("/")
    unsigned = urlencode([(k, v) for k, v in params if k != "X-Amz-Signature"], quote_via=quote)
    request = AWSRequest(method="GET", url=urlunsplit((parts.scheme, parts.netloc, parts.path, unsigned, "")))
    request.context["timestamp"] = query["X-Amz-Date"]
    auth = S3SigV4QueryAuth(Credentials(access_key, secret_access_key), service, region, expires=expires)
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    if expected != query.get("X-Amz-Signature") or not 0 < expires <= MAX_EXPIRES_S:
        return Presigned.BAD_SIGNATURE
    if now > signed_at(url) + timedelta(seconds=expires):
        return Presigned.EXPIRED
    return Presigned.OK
