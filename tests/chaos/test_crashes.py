"""Scenarios 2 and 3: a process SIGKILLed by a test-only fault point (services/common/faults.py)

2. between the database commit and the publish (`outbox.committed`): the event waits in the
   outbox and is published once when the service comes back;
3. a consumer after its commit and before its ack (`inbox.committed`): JetStream redelivers
   the event after `ack_wait`, the inbox recognises it, nothing changes twice.
"""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest

from shop.order.v1 import order_pb2, order_service_pb2
from tests.chaos.cluster import Cluster
from tests.chaos.conftest import Chaos
from tests.chaos.load import FINAL, create_order, order_until, pay, retrying, top_up
from tests.e2e.shop import eventually, usd
from tests.ids import new_id

pytestmark = pytest.mark.chaos


def _killed(cluster: Cluster, name: str, timeout: float = 60.0) -> None:
    code = cluster.exit_code(name, timeout)
    assert code == -signal.SIGKILL, f"{name} should have crashed at its fault point, got {code}"


async def _killed_async(cluster: Cluster, name: str) -> None:
    await asyncio.to_thread(_killed, cluster, name)


async def _restart(cluster: Cluster, name: str, fault: str | None = None) -> None:
    await asyncio.to_thread(cluster.restart, name, fault)


async def test_2_sigkill_between_commit_and_publish(chaos: Chaos) -> None:
    cluster, tracker = chaos.cluster, chaos.tracker
    async with cluster.shop() as shop:
        customer = shop.new_customer()
        await top_up(shop, tracker, customer, 50_000)

        # Order dies right after committing the order and its orders.created
        await _restart(cluster, "order", "outbox.committed")
        request = order_service_pb2.CreateOrderRequest(
            customer_id=customer,
            items=[order_pb2.OrderItem(sku="SKU-CHAOS", quantity=1, unit_price=usd(2_500))],
            request_id=new_id(),
        )
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await shop.order.CreateOrder(request, timeout=30)
        assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
        await _killed_async(cluster, "order")
        chaos.fault()
        db = await cluster.db()
        try:
            rows = await db.fetch(
                "SELECT order_id::text AS id FROM orders.orders WHERE customer_id = $1", customer
            )
            order_ids = {r["id"] for r in rows}
            assert len(order_ids) == 1, rows  # committed before the crash
            unsent = await db.fetchval(
                "SELECT count(*) FROM orders.outbox WHERE published_at IS NULL"
            )
            assert unsent >= 1  # … and its event not published
        finally:
            await db.close()
        await _restart(cluster, "order")
        # the client retries with the same request_id and gets the committed order
        again = (await retrying(lambda: shop.order.CreateOrder(request), tracker)).order
        assert {again.order_id} == order_ids
        reserved = await order_until(
            shop, tracker, again.order_id, (order_pb2.ORDER_STATUS_RESERVED,)
        )
        chaos.sagas()

        # Payment dies after committing PENDING + payments.requested (before the charge),
        # then, restarted, after committing SUCCEEDED + payments.succeeded (before publish)
        for point in ("outbox.committed@1", "outbox.committed@2"):
            order = reserved
            if point.endswith("@2"):
                created = await create_order(shop, tracker, customer, 1_500)
                order = await order_until(
                    shop, tracker, created.order_id, (order_pb2.ORDER_STATUS_RESERVED,)
                )
                chaos.sagas()
            await _restart(cluster, "payment", point)
            request_id = new_id()
            with pytest.raises(grpc.aio.AioRpcError) as cut:
                await pay(shop, tracker, order, request_id, retry=False)
            assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
            await _killed_async(cluster, "payment")
            chaos.fault()
            await _restart(cluster, "payment")
            answer = await pay(shop, tracker, order, request_id)  # same request: same payment
            assert answer.payment.order_id == order.order_id
            final = await order_until(shop, tracker, order.order_id, FINAL)
            assert final.status == order_pb2.ORDER_STATUS_PAID, final
            assert final.payment_id == answer.payment.payment_id
        # Credit captures each hold on its own consumer, independently of Order: wait for it.
        account = await eventually(
            lambda: shop.account(customer), lambda a: a.spent.minor_units >= 2_500 + 1_500
        )
        assert account.spent.minor_units == 2_500 + 1_500


def _mentions(cluster: Cluster, name: str, text: str) -> int:
    try:
        return cluster.service(name).log_path.read_text(errors="replace").count(text)
    except OSError:
        return 0


async def test_3_sigkill_consumer_after_commit_before_ack(chaos: Chaos) -> None:
    cluster, tracker = chaos.cluster, chaos.tracker
    async with cluster.shop() as shop:
        customer = shop.new_customer()
        await top_up(shop, tracker, customer, 50_000)
        seen = {name: _mentions(cluster, name, "already applied") for name in ("order", "credit")}

        # Credit applies orders.created (the hold) and dies before the ack; so does Order
        # with credits.reserved once Credit is back.
        await _restart(cluster, "credit", "inbox.committed")
        await _restart(cluster, "order", "inbox.committed")
        order = await create_order(shop, tracker, customer, 3_000)
        chaos.sagas()
        await _killed_async(cluster, "credit")
        chaos.fault()
        await _restart(cluster, "credit")
        await _killed_async(cluster, "order")
        chaos.fault()
        await _restart(cluster, "order")

        reserved = await order_until(
            shop, tracker, order.order_id, (order_pb2.ORDER_STATUS_RESERVED,)
        )
        # JetStream redelivers both unacked events (ack_wait 30 s); the inboxes drop them
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while any(_mentions(cluster, name, "already applied") <= seen[name] for name in seen):
            assert loop.time() < deadline, "the unacked events were never redelivered"
            await asyncio.sleep(0.5)
        account = await shop.account(customer)
        assert account.reserved.minor_units == 3_000
        assert account.available.minor_units == 47_000
        holds = await shop.reservations_of(customer)
        assert len(holds) == 1

        await pay(shop, tracker, reserved)
        final = await order_until(shop, tracker, order.order_id, FINAL)
        assert final.status == order_pb2.ORDER_STATUS_PAID
