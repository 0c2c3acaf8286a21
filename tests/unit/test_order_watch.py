"""WatchOrder's use case without a server: what a stream sends for the changes it hears
(services/order/service_layer/watch.py) and how a notification's payload reads."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from services.common.money import Money
from services.order.adapters.status_feed import StatusFeed, WatchLimitReached, parse_change
from services.order.domain.model import TERMINAL, TRANSITIONS, LineItem, Order, OrderStatus
from services.order.service_layer.ports import StatusChange
from services.order.service_layer.watch import RANK, follow

S = OrderStatus
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def stored(status: OrderStatus = S.PENDING, at: datetime = T0) -> Order:
    order = Order.create(
        "0b7e7f5e-6a43-4c8e-9d0a-3f1f2b9c7d11",
        "a8098c1a-f86e-11da-bd1a-00112444be1e",
        [LineItem("SKU-1", 2, Money("USD", 750))],
    )
    order.status = status
    order.created_at, order.updated_at = T0, at
    return order


def change(status: OrderStatus, seconds: int, **fields: str) -> StatusChange:
    return StatusChange(
        order_id=stored().order_id,
        status=status,
        reservation_id=fields.get("reservation_id", ""),
        payment_id=fields.get("payment_id", ""),
        failure_reason=fields.get("failure_reason", ""),
        updated_at=T0 + timedelta(seconds=seconds),
        reread=False,
    )


def test_every_transition_moves_an_order_farther_from_pending() -> None:
    for (before, trigger), after in TRANSITIONS.items():
        assert RANK[after] > RANK[before], (before, trigger, after)
    assert RANK[S.PENDING] == 0


async def sent(
    first: Order,
    heard: list[StatusChange | None],
    reads: list[Order] | None = None,
    seconds: float = 5.0,
) -> list[Order]:
    feed = StatusFeed(engine=None, max_streams=10)  # type: ignore[arg-type]
    pending_reads = list(reads or [])

    async def read() -> Order:
        return pending_reads.pop(0)

    with feed.subscribe(first.order_id) as subscription:
        for item in heard:
            subscription.put(item)
        return [s async for s in follow(first, subscription, read, seconds)]


async def test_the_order_then_each_change_until_a_terminal_status() -> None:
    out = await sent(
        stored(),
        [
            change(S.RESERVED, 1, reservation_id="r-1"),
            change(S.PAYMENT_FAILED, 2, reservation_id="r-1", failure_reason="CARD_DECLINED"),
        ],
    )
    assert [s.status for s in out] == [S.PENDING, S.RESERVED, S.PAYMENT_FAILED]
    assert out[1].reservation_id == "r-1"
    assert out[2].failure_reason == "CARD_DECLINED"
    assert out[2].updated_at == T0 + timedelta(seconds=2)
    assert out[2].items == out[0].items  # what never changes comes from the read
    assert out[2].status in TERMINAL


async def test_a_change_the_first_read_already_showed_is_not_sent_again() -> None:
    out = await sent(
        stored(S.RESERVED),
        [change(S.RESERVED, 1), change(S.CANCELLED, 2, failure_reason="changed mind")],
    )
    assert [s.status for s in out] == [S.RESERVED, S.CANCELLED]


async def test_after_a_lost_listener_the_order_is_read_again() -> None:
    out = await sent(stored(), [None], reads=[stored(S.REJECTED, T0 + timedelta(seconds=3))])
    assert [s.status for s in out] == [S.PENDING, S.REJECTED]


async def test_a_watch_ends_after_its_time_when_nothing_moves() -> None:
    started = asyncio.get_running_loop().time()
    out = await sent(stored(S.PAID), [], seconds=0.2)
    assert [s.status for s in out] == [S.PAID]  # PAID is not final: it waited
    assert 0.2 <= asyncio.get_running_loop().time() - started < 2


async def test_the_feed_refuses_streams_beyond_its_cap_and_frees_closed_ones() -> None:
    feed = StatusFeed(engine=None, max_streams=1)  # type: ignore[arg-type]
    with feed.subscribe("a"):
        with pytest.raises(WatchLimitReached), feed.subscribe("b"):
            pass
        assert feed.open_streams == 1
    assert feed.open_streams == 0
    with feed.subscribe("b"):
        assert feed.open_streams == 1


def test_a_notification_payload_reads_as_the_trigger_writes_it() -> None:
    payload = json.dumps(
        {
            "order_id": "0b7e7f5e-6a43-4c8e-9d0a-3f1f2b9c7d11",
            "status": "PAID",
            "reservation_id": "4a0d9e19-cb51-424d-8c24-2a7a76e8e9e5",
            "payment_id": "7383a7c8-2f66-48dc-ae96-d8f1c03002bc",
            "failure_reason": None,
            "updated_at": "2026-12-03T08:53:17.123456+00:00",
            "reread": False,
        }
    )
    parsed = parse_change(payload)
    assert parsed.status == S.PAID
    assert parsed.failure_reason == ""
    assert parsed.updated_at == datetime(2026, 12, 3, 8, 53, 17, 123456, tzinfo=UTC)
