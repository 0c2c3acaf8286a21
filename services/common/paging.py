"""AIP-158 pagination: opaque keyset tokens over (created_at, id), newest first.

A token names the last row of the previous page and the query it belongs to; a token used
with other filters, or forged, is INVALID_ARGUMENT on `page_token`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from services.common.errors import FieldViolation, InvalidArgument


@dataclass(frozen=True)
class PageCursor:
    created_at: datetime
    id: str


def _query_tag(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:12]


def encode_page_token(cursor: PageCursor, query: str) -> str:
    raw = json.dumps({"t": cursor.created_at.isoformat(), "i": cursor.id, "q": _query_tag(query)})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(token: str, query: str, field: str = "page_token") -> PageCursor | None:
    """None for the first page; the cursor to continue after otherwise."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        cursor = PageCursor(datetime.fromisoformat(data["t"]), str(uuid.UUID(data["i"])))
        tag = data["q"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise _bad(field, "is not a token this service returned") from None
    if tag != _query_tag(query):
        raise _bad(field, "belongs to a listing with other filters")
    return cursor


def _bad(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(f"invalid {field}", [FieldViolation(field, description)])


def next_page_token(rows: list[PageCursor], page_size: int, query: str) -> tuple[int, str]:
    """Given up to page_size + 1 fetched rows: (how many to return, the next token or "")."""
    if len(rows) <= page_size:
        return len(rows), ""
    return page_size, encode_page_token(rows[page_size - 1], query)
