"""Page tokens (signed, checked before anything in them is parsed) and pages cut to fit one
response (services/common/paging.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import InvalidArgument, NotFound, found
from services.common.paging import (
    MAX_TOKEN_LENGTH,
    RESPONSE_HEADROOM_BYTES,
    Fetched,
    PageCursor,
    Pager,
)
from shop.order.v1 import order_pb2

KEY = b"k" * 32
QUERY = "customer_id=00000000-0000-0000-0000-000000000001"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def signed(payload: bytes, key: bytes = KEY) -> str:
    """A token over any payload, signed as the service signs: what a holder of the key
    could make, to check the parsing after the signature."""
    mac = hmac.new(key, b"shop page token v1\x00" + payload, hashlib.sha256).digest()
    return f"{b64(payload)}.{b64(mac)}"


def refused(pager: Pager, token: str, query: str = QUERY) -> str:
    with pytest.raises(InvalidArgument) as raised:
        pager.decode(token, query)
    (violation,) = raised.value.violations
    assert violation.field == "page_token"
    return violation.description


def test_a_token_round_trips_and_an_empty_one_is_the_first_page() -> None:
    pager = Pager(KEY, 4 << 20)
    cursor = PageCursor(NOW, str(uuid.uuid4()))
    assert pager.decode(pager.encode(cursor, QUERY), QUERY) == cursor
    assert pager.decode("", QUERY) is None


def test_a_tampered_token_is_invalid() -> None:
    pager = Pager(KEY, 4 << 20)
    token = pager.encode(PageCursor(NOW, str(uuid.uuid4())), QUERY)
    body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["t"] = (NOW - timedelta(days=1)).isoformat()  # skip ahead: the MAC no longer fits
    forged = f"{b64(json.dumps(payload).encode())}.{mac}"
    assert refused(pager, forged) == "is not a token this service returned"
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    refused(pager, flipped)
    refused(pager, body)  # no signature at all
    refused(pager, token + ".x")
    refused(pager, "not-a-token")
    refused(pager, "%%%.***")


def test_a_token_of_another_key_is_invalid() -> None:
    other = Pager(b"o" * 32, 4 << 20).encode(PageCursor(NOW, str(uuid.uuid4())), QUERY)
    refused(Pager(KEY, 4 << 20), other)


@pytest.mark.parametrize(
    "payload",
    [
        {"t": 5, "i": str(uuid.uuid4()), "q": "x"},
        {"t": NOW.isoformat(), "i": ["a"], "q": "x"},
        {"t": NOW.isoformat(), "i": str(uuid.uuid4()), "q": {"x": 1}},
        {"t": NOW.isoformat(), "i": "not-a-uuid", "q": "x"},
        {"t": "2026-13-45", "i": str(uuid.uuid4()), "q": "x"},
        {"t": "2026-01-02T03:04:05", "i": str(uuid.uuid4()), "q": "x"},  # no time zone
        {"i": str(uuid.uuid4()), "q": "x"},
        [1, 2, 3],
        "a string",
        None,
    ],
)
def test_a_wrong_typed_token_is_invalid_signed_or_not(payload: object) -> None:
    pager = Pager(KEY, 4 << 20)
    raw = json.dumps(payload).encode()
    refused(pager, signed(raw))
    refused(pager, b64(raw))  # the old unsigned format, crafted


def test_deeply_nested_json_is_invalid_signed_or_not() -> None:
    pager = Pager(KEY, 4 << 20)
    nested = b"[" * 100_000 + b"]" * 100_000
    refused(pager, b64(nested))  # far too long: refused before any decoding
    refused(pager, b64(b"[" * 300))
    refused(pager, signed(b"[" * 200_000 + b"]" * 200_000))  # signed: json's recursion limit


def test_an_overlong_token_is_invalid() -> None:
    pager = Pager(KEY, 4 << 20)
    refused(pager, "a" * (MAX_TOKEN_LENGTH + 1))


def test_a_token_of_another_query_is_invalid() -> None:
    pager = Pager(KEY, 4 << 20)
    token = pager.encode(PageCursor(NOW, str(uuid.uuid4())), QUERY)
    description = refused(pager, token, "customer_id=00000000-0000-0000-0000-000000000002")
    assert description == "belongs to a listing with other filters"


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Pager(b"short", 4 << 20)


# Pages ──────────────────────────────────────────────────────────────────────────────────────


def rows(count: int) -> list[tuple[PageCursor, order_pb2.Order]]:
    """Newest first, each about 1 KB serialized."""
    return [
        (
            PageCursor(NOW - timedelta(seconds=n), str(uuid.uuid4())),
            order_pb2.Order(order_id=str(n), failure_reason="x" * 1000),
        )
        for n in range(count)
    ]


def cut(
    pager: Pager, fetched: list[tuple[PageCursor, order_pb2.Order]], size: int, **kw: bool
) -> tuple[list[order_pb2.Order], str]:
    return pager.page(fetched, size, QUERY, lambda r: r[0], lambda r: r[1], **kw)


def test_a_page_stops_at_its_size_and_points_after_its_last_row() -> None:
    pager = Pager(KEY, 4 << 20)
    fetched = rows(4)
    messages, token = cut(pager, fetched, 3)
    assert [m.order_id for m in messages] == ["0", "1", "2"]
    assert pager.decode(token, QUERY) == fetched[2][0]
    messages, token = cut(pager, fetched[:3], 3)
    assert len(messages) == 3
    assert token == ""


def test_a_page_stops_before_the_byte_budget_and_always_has_one_row() -> None:
    pager = Pager(KEY, RESPONSE_HEADROOM_BYTES + 5_000)  # room for four 1 KB rows
    fetched = rows(20)
    messages, token = cut(pager, fetched, 1000)
    assert len(messages) == 4
    assert sum(len(m.SerializeToString()) + 3 for m in messages) <= pager.budget_bytes
    assert pager.decode(token, QUERY) == fetched[3][0]

    tiny = Pager(KEY, 10)  # no room at all: still one row per page, so paging advances
    messages, token = cut(tiny, fetched, 1000)
    assert len(messages) == 1
    assert tiny.decode(token, QUERY) == fetched[0][0]


def test_a_fetch_cut_short_by_the_store_still_has_a_next_page() -> None:
    pager = Pager(KEY, 4 << 20)
    fetched = rows(2)
    messages, token = cut(pager, fetched, 10, cut_short=True)
    assert len(messages) == 2
    assert pager.decode(token, QUERY) == fetched[1][0]
    assert cut(pager, [], 10, cut_short=False) == ([], "")


@dataclass(frozen=True)
class Listed:
    """A stored row as a List RPC reads it: its creation time, its id, its message."""

    created_at: datetime | None
    id: str
    message: order_pb2.Order

    @property
    def cursor(self) -> PageCursor:
        assert self.created_at is not None
        return PageCursor(self.created_at, self.id)


def listed(count: int) -> list[Listed]:
    return [Listed(cursor.created_at, cursor.id, message) for cursor, message in rows(count)]


async def test_serve_walks_a_listing_page_by_page_asking_one_row_more() -> None:
    pager = Pager(KEY, 4 << 20)
    table = listed(7)
    asked: list[tuple[PageCursor | None, int]] = []

    async def fetch(after: PageCursor | None, limit: int) -> list[Listed]:
        asked.append((after, limit))
        start = 0 if after is None else [r.cursor for r in table].index(after) + 1
        return table[start : start + limit]

    seen, token = [], ""
    while True:
        page, token = await pager.serve(token, 3, QUERY, fetch, lambda r: r.id, lambda r: r.message)
        seen += [m.order_id for m in page]
        if not token:
            break
    assert seen == [str(n) for n in range(7)]
    assert [limit for _, limit in asked] == [4, 4, 4]
    assert asked[1][0] == table[2].cursor


async def test_serve_keeps_a_stores_cut_short_and_refuses_a_foreign_token() -> None:
    pager = Pager(KEY, 4 << 20)
    table = listed(2)

    async def fetch(after: PageCursor | None, limit: int) -> Fetched[Listed]:
        return Fetched(table, cut_short=True)

    page, token = await pager.serve("", 10, QUERY, fetch, lambda r: r.id, lambda r: r.message)
    assert len(page) == 2
    assert pager.decode(token, QUERY) == table[1].cursor
    with pytest.raises(InvalidArgument):
        await pager.serve(
            token, 10, "customer_id=other", fetch, lambda r: r.id, lambda r: r.message
        )


async def test_serve_refuses_to_page_after_a_row_that_was_never_stored() -> None:
    pager = Pager(KEY, 4 << 20)
    unstored = [Listed(None, "id-1", order_pb2.Order()), Listed(None, "id-2", order_pb2.Order())]

    async def fetch(after: PageCursor | None, limit: int) -> list[Listed]:
        return unstored

    with pytest.raises(ValueError, match="never stored"):
        await pager.serve("", 1, QUERY, fetch, lambda r: r.id, lambda r: r.message)


def test_a_cursor_is_taken_only_after_a_stored_row() -> None:
    assert PageCursor.after(NOW, "id-1") == PageCursor(NOW, "id-1")
    with pytest.raises(ValueError, match="never stored"):
        PageCursor.after(None, "id-1")


def test_found_gives_the_value_or_raises_the_callers_not_found() -> None:
    missing = NotFound("order 1 does not exist")
    assert found(0, missing) == 0  # a falsy value is still a value
    with pytest.raises(NotFound) as raised:
        found(None, missing)
    assert raised.value is missing
