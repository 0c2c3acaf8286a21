"""Scenario 7: a slow or dead dependency while Payment validates a payment.

Order or Credit killed (connection refused) or frozen (SIGSTOP: the socket accepts, nothing
answers): the caller gets UNAVAILABLE or DEADLINE_EXCEEDED within its own deadline, no
payment is left PENDING, and once the dependency is back the same request succeeds.
"""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest

from shop.order.v1 import order_pb2
from tests.chaos.conftest import Chaos
from tests.chaos.load import FINAL, create_order, order_until, pay, top_up
from tests.ids import new_id

pytestmark = pytest.mark.chaos

DEADLINE = 4.0
SLACK = 3.0  # scheduling on a loaded 2-core machine


async def test_7_dependency_down_or_slow_while_payment_validates(chaos: Chaos) -> None:
    cluster, tracker = chaos.cluster, chaos.tracker
    async with cluster.shop() as shop:
        customer = shop.new_customer()
        await top_up(shop, tracker, customer, 20_000)
        created = await create_order(shop, tracker, customer, 3_300)
        order = await order_until(
            shop, tracker, created.order_id, (order_pb2.ORDER_STATUS_RESERVED,)
        )
        chaos.sagas()
        request_id = new_id()
        seen: list[tuple[str, grpc.StatusCode, float]] = []

        for dependency in ("order", "credit"):
            for how in ("killed", "frozen"):
                proc = cluster.service(dependency)
                if how == "killed":
                    await asyncio.to_thread(cluster.kill, dependency)
                else:
                    proc.signal(signal.SIGSTOP)
                chaos.fault()
                try:
                    started = time.monotonic()
                    with pytest.raises(grpc.aio.AioRpcError) as error:
                        await shop.payment.ProcessPayment(
                            shop.payment_request(order, request_id=request_id), timeout=DEADLINE
                        )
                    took = time.monotonic() - started
                    seen.append((f"{dependency} {how}", error.value.code(), took))
                    assert error.value.code() in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    ), (dependency, how, error.value.code(), error.value.details())
                    assert took < DEADLINE + SLACK, (dependency, how, took)
                finally:
                    if how == "frozen":
                        proc.signal(signal.SIGCONT)
                    else:
                        await asyncio.to_thread(cluster.restart, dependency)
                # Payment never took the money meanwhile, nor left the order hanging
                db = await cluster.db()
                try:
                    rows = await db.fetch(
                        "SELECT status FROM payments.payments WHERE order_id = $1",
                        order.order_id,
                    )
                finally:
                    await db.close()
                assert [r["status"] for r in rows] in ([], ["PENDING"], ["SUCCEEDED"]), rows

        # the dependency is back: the same request (same request_id) goes through
        answer = await pay(shop, tracker, order, request_id)
        assert answer.payment.order_id == order.order_id
        final = await order_until(shop, tracker, order.order_id, FINAL)
        assert final.status == order_pb2.ORDER_STATUS_PAID, (final, seen)
