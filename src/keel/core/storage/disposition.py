"""Content-Disposition for a stored upload: the browser saves it under its original name.

RFC 6266 with RFC 8187 (ex-5987) encoding: `filename*=UTF-8''…` carries the exact name, percent-
encoded, and `filename="…"` an ASCII stand-in for old clients. Nothing of the name reaches the header
raw, so a name with quotes, semicolons, CR/LF or non-ASCII letters can neither break the header nor
add one.
"""

from __future__ import annotations

from urllib.parse import quote

FALLBACK_NAME = "download"


def attachment_disposition(filename: str) -> str:
    # Only the last path segment: a client may send "C:\\Users\\me\\report.pdf" or "../../x".
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip() or FALLBACK_NAME
    ascii_name = "".join(c if " " <= c <= "~" and c not in '"\\;%' else "_" for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
