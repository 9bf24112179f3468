"""Text that PostgreSQL can store: `text` cannot hold U+0000, so a NUL in any string a client sends is
refused at validation (422 naming the field) instead of failing in the database."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


# Put it after any StringConstraints: `Annotated[str, StringConstraints(...), NO_NUL]`.
NO_NUL = AfterValidator(_no_nul)
StoredText = Annotated[str, NO_NUL]
