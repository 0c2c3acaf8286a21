"""Scenarios 1 and 6: concurrent duplicates of one payment, and a customer's parallel orders
racing for one balance."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from shop.order.v1 import order_pb2
from shop.payment.v1 import payment_service_pb2
from tests.chaos.conftest import Chaos
from tests.chaos.load import FINAL, create_order, order_until, top_up
from tests.e2e.conftest import rich_status
from tests.e2e.shop import eventually, usd

pytestmark = pytest.mark.chaos

RACE = 50


async def test_1_fifty_concurrent_payments(chaos: Chaos) -> None:
    tracker = chaos.tracker
    async with chaos.cluster.shop() as shop:
        customer = shop.new_customer()
        await top_up(shop, tracker, customer, 100_000)
        orders = []
        for _ in range(2):
            created = await create_order(shop, tracker, customer, 1_234)
            orders.append(
                await order_until(
                    shop, tracker, created.order_id, (order_pb2.ORDER_STATUS_RESERVED,)
                )
            )
        chaos.sagas(2)

        # (a) one request_id, 50 times at once → one payment, the same answer every time
        same = shop.payment_request(orders[0])
        answers = await asyncio.gather(
            *(shop.payment.ProcessPayment(same) for _ in range(RACE)), return_exceptions=True
        )
        chaos.fault(RACE)
        errors = [a for a in answers if isinstance(a, BaseException)]
        assert not errors, errors[:3]
        ids = {a.payment.payment_id for a in answers if not isinstance(a, BaseException)}
        assert len(ids) == 1, ids

        # (b) 50 different request_ids at once → still one charge for the order
        requests = [shop.payment_request(orders[1]) for _ in range(RACE)]
        answers = await asyncio.gather(
            *(shop.payment.ProcessPayment(r) for r in requests), return_exceptions=True
        )
        chaos.fault(RACE)
        won = {a.payment.payment_id for a in answers if not isinstance(a, BaseException)}
        lost = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
        assert all(
            isinstance(a, grpc.aio.AioRpcError | payment_service_pb2.ProcessPaymentResponse)
            for a in answers
        ), answers
        for error in lost:
            assert error.code() in (
                grpc.StatusCode.ALREADY_EXISTS,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.ABORTED,
            ), (error.code(), error.details())
            info, _ = rich_status(error)
            assert info is not None, error.details()
            assert info.reason, error.details()
        assert len(won) == 1, (won, [e.details() for e in lost[:3]])

        # (c) a reused request_id with different fields → IDEMPOTENCY_KEY_REUSED, no effect
        db = await chaos.cluster.db()
        try:
            before = await db.fetchval("SELECT count(*) FROM payments.payments")
            altered = payment_service_pb2.ProcessPaymentRequest()
            altered.CopyFrom(same)
            altered.amount.CopyFrom(usd(orders[0].total.minor_units + 1))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await shop.payment.ProcessPayment(altered)
            assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
            info, _ = rich_status(refused.value)
            assert info is not None
            assert info.reason == "IDEMPOTENCY_KEY_REUSED"
            assert await db.fetchval("SELECT count(*) FROM payments.payments") == before
            for order in orders:
                rows = await db.fetch(
                    "SELECT status FROM payments.payments WHERE order_id = $1", order.order_id
                )
                assert [r["status"] for r in rows] == ["SUCCEEDED"], rows
        finally:
            await db.close()
        for order in orders:
            final = await order_until(shop, tracker, order.order_id, FINAL)
            assert final.status == order_pb2.ORDER_STATUS_PAID
        # Credit captures each hold on its own consumer, independently of Order: wait for it.
        account = await eventually(
            lambda: shop.account(customer), lambda a: a.spent.minor_units >= 2 * 1_234
        )
        assert account.spent.minor_units == 2 * 1_234


async def test_6_parallel_orders_exceeding_balance(chaos: Chaos) -> None:
    tracker = chaos.tracker
    price, orders_count, balance = 700, 40, 10_000  # 14 fit, 26 must be rejected
    async with chaos.cluster.shop() as shop:
        customer = shop.new_customer()
        await top_up(shop, tracker, customer, balance)
        created = await asyncio.gather(
            *(create_order(shop, tracker, customer, price) for _ in range(orders_count))
        )
        chaos.sagas(orders_count)
        settled = await asyncio.gather(
            *(
                order_until(
                    shop,
                    tracker,
                    o.order_id,
                    (order_pb2.ORDER_STATUS_RESERVED, order_pb2.ORDER_STATUS_REJECTED),
                )
                for o in created
            )
        )
        reserved = [o for o in settled if o.status == order_pb2.ORDER_STATUS_RESERVED]
        rejected = [o for o in settled if o.status == order_pb2.ORDER_STATUS_REJECTED]
        assert len(reserved) == balance // price, (len(reserved), len(rejected))
        assert len(reserved) + len(rejected) == orders_count
        account = await shop.account(customer)
        assert account.reserved.minor_units == len(reserved) * price <= balance
        assert account.available.minor_units == balance - len(reserved) * price
        # the rejected ones carry a reason and no hold
        for order in rejected:
            assert order.failure_reason, order
