"""The invariant checker itself can fail: each corruption, made by hand in the database and
undone afterwards, is reported as a violation."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from shop.order.v1 import order_pb2
from tests.chaos.conftest import Chaos
from tests.chaos.invariants import check_once
from tests.chaos.load import create_order, order_until, top_up

pytestmark = pytest.mark.chaos


async def test_0_invariants_catch_violations(chaos: Chaos) -> None:
    cluster, tracker = chaos.cluster, chaos.tracker
    async with cluster.shop() as shop:
        customer = shop.new_customer()
        await top_up(shop, tracker, customer, 10_000)
        created = await create_order(shop, tracker, customer, 1_000)
        order = await order_until(
            shop, tracker, created.order_id, (order_pb2.ORDER_STATUS_RESERVED,)
        )
    await chaos.check()

    async def violations() -> list[str]:
        _, problems = await check_once(cluster.database_url, cluster.nats.url, tracker.topped_up)
        return problems

    assert await violations() == []
    db = await cluster.db()
    try:
        # an event that was "published" but never reached the stream or its consumer
        ghost = str(uuid.uuid4())
        await db.execute(
            "INSERT INTO orders.outbox (event_id, subject, event_type, payload, headers,"
            " published_at) VALUES ($1, 'orders.created', 'shop.order.v1.OrderCreated', '',"
            " '{}', now())",
            ghost,
        )
        found = await violations()
        assert any(ghost in p and "in stream 0 times" in p for p in found), found
        assert any(ghost in p and "credit-orders never applied" in p for p in found), found
        await db.execute("DELETE FROM orders.outbox WHERE event_id = $1", ghost)

        # an order PAID without a payment or a captured hold
        await db.execute(
            "UPDATE orders.orders SET status = 'PAID' WHERE order_id = $1", order.order_id
        )
        found = await violations()
        assert any(order.order_id in p and "PAID but hold ACTIVE" in p for p in found), found
        await db.execute(
            "UPDATE orders.orders SET status = 'RESERVED' WHERE order_id = $1", order.order_id
        )

        # a top-up the client never made
        wrong = Counter(tracker.topped_up)
        wrong[customer] += 1
        _, found = await check_once(cluster.database_url, cluster.nats.url, wrong)
        assert any(customer in p and "clients added" in p for p in found), found
    finally:
        await db.close()
    assert await violations() == []
