"""AIP-158 pagination: opaque keyset tokens over (created_at, id), newest first, and pages
bounded by bytes as well as by count.

A token names the last row of the previous page and the query it belongs to, and is signed
(HMAC-SHA256, key PAGE_TOKEN_KEY): one this service did not issue, one altered, or one used
with other filters is INVALID_ARGUMENT on `page_token`; nothing of a token is parsed before
its signature checks out.

A page stops at `page_size` rows or before the serialized rows would pass the message limit
(GRPC_MAX_MESSAGE_BYTES less some headroom), whichever comes first, with at least one row:
the response always fits, and `next_page_token` points after the last row returned. Stores
whose rows can be large also bound what they load (Order: by items), and say so with
`cut_short`, so a page is never loaded whole just to be cut.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from services.common.errors import FieldViolation, InvalidArgument

MAX_TOKEN_LENGTH = 512  # ours are about 200 characters
# Room in a response for everything but the rows: next_page_token and the fields' framing.
RESPONSE_HEADROOM_BYTES = 1024
_MAC_LABEL = b"shop page token v1\x00"


class _Message(Protocol):
    def ByteSize(self) -> int: ...


class _Stored(Protocol):
    @property
    def created_at(self) -> datetime | None: ...


Row = TypeVar("Row")
StoredRow = TypeVar("StoredRow", bound=_Stored)
Msg = TypeVar("Msg", bound=_Message)


@dataclass(frozen=True)
class PageCursor:
    """Where a page ended: the last row's creation time and id (the keyset)."""

    created_at: datetime
    id: str

    @classmethod
    def after(cls, created_at: datetime | None, row_id: str) -> PageCursor:
        """The cursor just past a stored row.

        Args:
            created_at: The row's creation time, as the store wrote it.
            row_id: The row's id (the keyset's tie-breaker).

        Returns:
            The cursor a page that ends at this row continues from.

        Raises:
            ValueError: The row was never stored (it has no creation time).
        """
        if created_at is None:
            raise ValueError(f"{row_id} has no creation time: it was never stored")
        return cls(created_at, row_id)


@dataclass(frozen=True)
class Fetched(Generic[Row]):
    """Rows a store loaded for one page: up to page_size + 1, fewer when it stopped early
    at its own bound (`cut_short`: more rows may follow)."""

    rows: Sequence[Row]
    cut_short: bool = False


def _query_tag(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:12]


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _bad(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(f"invalid {field}", [FieldViolation(field, description)])


def _field_size(message_size: int) -> int:
    """Bytes a repeated message field adds: its tag, its length varint, the message."""
    return 1 + max(1, (message_size.bit_length() + 6) // 7) + message_size


class Pager:
    """Issues and checks page tokens, and cuts pages to fit one response."""

    def __init__(self, key: bytes, max_message_bytes: int) -> None:
        if len(key) < 16:
            raise ValueError("a page token key needs at least 16 bytes")
        self._key = key
        self.budget_bytes = max(0, max_message_bytes - RESPONSE_HEADROOM_BYTES)

    def __repr__(self) -> str:  # never show the key
        return f"Pager(key=***, budget_bytes={self.budget_bytes})"

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, _MAC_LABEL + payload, hashlib.sha256).digest()

    def encode(self, cursor: PageCursor, query: str) -> str:
        """A signed page token naming `cursor`, valid only with the same `query`."""
        payload = json.dumps(
            {"t": cursor.created_at.isoformat(), "i": cursor.id, "q": _query_tag(query)},
            separators=(",", ":"),
        ).encode()
        return f"{_b64encode(payload)}.{_b64encode(self._mac(payload))}"

    def decode(self, token: str, query: str, field: str = "page_token") -> PageCursor | None:
        """None for the first page; the cursor to continue after otherwise."""
        if not token:
            return None
        foreign = _bad(field, "is not a token this service returned")
        if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
            raise foreign
        body, _, mac = token.partition(".")
        try:
            payload, signature = _b64decode(body), _b64decode(mac)
        except (binascii.Error, ValueError):
            raise foreign from None
        if not hmac.compare_digest(signature, self._mac(payload)):
            raise foreign
        # Signed by us: still checked field by field, so a token of another version of the
        # format is refused rather than failing somewhere below.
        try:
            data = json.loads(payload)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            created_at, row_id, tag = data["t"], data["i"], data["q"]
            if not all(isinstance(value, str) for value in (created_at, row_id, tag)):
                raise TypeError("not a string")
            cursor = PageCursor(datetime.fromisoformat(created_at), str(uuid.UUID(row_id)))
            if cursor.created_at.tzinfo is None:
                raise ValueError("no time zone")
        except (ValueError, KeyError, TypeError, RecursionError):
            raise foreign from None
        if tag != _query_tag(query):
            raise _bad(field, "belongs to a listing with other filters")
        return cursor

    def page(
        self,
        rows: Sequence[Row],
        page_size: int,
        query: str,
        cursor_of: Callable[[Row], PageCursor],
        to_proto: Callable[[Row], Msg],
        *,
        cut_short: bool = False,
    ) -> tuple[list[Msg], str]:
        """The messages of one page and the next token ("" at the end), given up to
        page_size + 1 fetched rows; `cut_short` when the store stopped before page_size + 1
        rows although more may follow (Order's fetch bounded by items)."""
        messages: list[Msg] = []
        size = 0
        for row in rows[:page_size]:
            message = to_proto(row)
            size += _field_size(message.ByteSize())
            if messages and size > self.budget_bytes:
                return messages, self.encode(cursor_of(rows[len(messages) - 1]), query)
            messages.append(message)
        more = len(rows) > page_size or cut_short
        if more and messages:
            return messages, self.encode(cursor_of(rows[len(messages) - 1]), query)
        return messages, ""

    async def serve(
        self,
        page_token: str,
        page_size: int,
        query: str,
        fetch: Callable[
            [PageCursor | None, int], Awaitable[Sequence[StoredRow] | Fetched[StoredRow]]
        ],
        id_of: Callable[[StoredRow], str],
        to_proto: Callable[[StoredRow], Msg],
    ) -> tuple[list[Msg], str]:
        """One page of a List RPC: the token checked, the rows fetched, the page cut.

        Args:
            page_token: The request's token ("" for the first page).
            page_size: Rows wanted (already bounded by the contract's rules).
            query: The listing's filters, to which the token is bound.
            fetch: Loads up to `limit` rows after the cursor (None: from the newest).
            id_of: A row's id; with its `created_at`, the keyset a page ends at.
            to_proto: A row as its message.

        Returns:
            The page's messages and the next token ("" at the end).

        Raises:
            InvalidArgument: The token is not one this service issued for `query`.
        """
        after = self.decode(page_token, query)
        fetched = await fetch(after, page_size + 1)
        if not isinstance(fetched, Fetched):
            fetched = Fetched(fetched)
        return self.page(
            fetched.rows,
            page_size,
            query,
            lambda row: PageCursor.after(row.created_at, id_of(row)),
            to_proto,
            cut_short=fetched.cut_short,
        )


def derived_key(secret: str) -> bytes:
    """A page token key derived from a setting every replica shares (the database URL),
    for when PAGE_TOKEN_KEY is not set: `make run` and the tests.

    Args:
        secret: the shared setting to derive from.

    Returns:
        32 bytes of key.
    """
    return hashlib.sha256(b"shop page token key\x00" + secret.encode()).digest()


@dataclass(frozen=True, slots=True)
class Keyset:
    """The SQL of one newest-first keyset page over `(created_at, <id column>)`, the order
    every List RPC uses: where to continue after the cursor, how to order, and the
    parameters for both (`:after_at`, `:after_id`).

    Args:
        id_column: the table's id column, the tie-breaker between equal `created_at`.
        after: the last row of the previous page, or None for the first page.
    """

    id_column: str
    after: PageCursor | None

    @property
    def condition(self) -> str:
        """A WHERE condition (`TRUE` on the first page)."""
        if self.after is None:
            return "TRUE"
        return f"(created_at, {self.id_column}) < (:after_at, :after_id)"

    @property
    def order_by(self) -> str:
        """The ORDER BY of a newest-first listing."""
        return f"created_at DESC, {self.id_column} DESC"

    @property
    def params(self) -> dict[str, object]:
        """The parameters `condition` refers to."""
        after = self.after
        return {
            "after_at": after.created_at if after else None,
            "after_id": after.id if after else None,
        }
