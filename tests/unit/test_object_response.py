"""Range parsing and the attachment header, the two pure pieces behind signed downloads."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from keel.core.errors import RangeNotSatisfiable
from keel.core.storage.disposition import attachment_disposition
from keel.core.storage.object_response import byte_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", (0, 0)),
        ("bytes=10-19", (10, 19)),
        ("bytes=90-", (90, 99)),
        ("bytes=95-1000", (95, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-1000", (0, 99)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole object
        ("bytes=20-10", None),  # invalid: ignored
        ("items=0-1", None),
        ("bytes=-", None),
    ],
)
def test_a_range_header_becomes_first_and_last_byte_or_the_whole_object(header, expected):
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_a_range_outside_the_object_is_416_naming_its_size(header):
    with pytest.raises(RangeNotSatisfiable) as caught:
        byte_range(header, 100)
    assert caught.value.headers == {"Content-Range": "bytes */100"}


@pytest.mark.parametrize(
    ("filename", "fallback"),
    [
        ("report.pdf", "report.pdf"),
        ("отчёт 2026.pdf", "_____ 2026.pdf"),
        ('a"b;c\\d.txt', "d.txt"),  # a Windows path: its last segment
        ("evil\r\nSet-Cookie: x=1", "evil__Set-Cookie: x=1"),
        ("../../etc/passwd", "passwd"),
        ("", "download"),
    ],
)
def test_the_attachment_header_carries_the_exact_name_encoded_and_a_safe_ascii_one(filename, fallback):
    header = attachment_disposition(filename)
    quoted, exact = header.removeprefix("attachment; ").split("; filename*=UTF-8''")
    assert quoted == f'filename="{fallback}"'
    assert unquote(exact) == (filename.replace("\\", "/").rsplit("/", 1)[-1].strip() or "download")
    assert header.isascii() and "\r" not in header and "\n" not in header
