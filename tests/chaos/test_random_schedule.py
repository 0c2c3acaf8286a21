"""Scenario 12: a randomized, seeded fault schedule mixing operations (payments, declines,
cancels, refunds) and faults (SIGKILL, SIGTERM, SIGSTOP, crash points, NATS and PostgreSQL
outages). The plan comes from `tests/chaos/schedule.py`; the seed is CHAOS_SEED (default
below, so CI is repeatable) and a failure prints it with the whole plan."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import pytest

from shop.order.v1 import order_pb2, order_service_pb2
from shop.payment.v1 import payment_pb2, payment_service_pb2
from tests.chaos.conftest import Chaos
from tests.chaos.load import FINAL, create_order, order_until, pay, retrying, top_up
from tests.chaos.schedule import Fault, Operation, plan
from tests.e2e.shop import Shop, usd
from tests.ids import new_id

pytestmark = pytest.mark.chaos

DEFAULT_SEED = 20261123
SEED = int(os.environ.get("CHAOS_SEED", DEFAULT_SEED))

EXPECTED = {
    "pay": order_pb2.ORDER_STATUS_PAID,
    "decline": order_pb2.ORDER_STATUS_PAYMENT_FAILED,
    "cancel": order_pb2.ORDER_STATUS_CANCELLED,
    "refund": order_pb2.ORDER_STATUS_REFUNDED,
    "partial-refund": order_pb2.ORDER_STATUS_PAID,
}


def test_12_a_seed_replays_exactly() -> None:
    assert plan(SEED) == plan(SEED)
    assert plan(SEED).describe() == plan(SEED).describe()
    assert plan(SEED) != plan(SEED + 1)


async def _operate(chaos: Chaos, shop: Shop, customer: str, op: Operation) -> int:
    tracker = chaos.tracker
    created = await create_order(shop, tracker, customer, op.price)
    order = await order_until(
        shop, tracker, created.order_id, (order_pb2.ORDER_STATUS_RESERVED, *FINAL), 180
    )
    assert order.status == order_pb2.ORDER_STATUS_RESERVED, order
    if op.kind == "cancel":
        cancel = order_service_pb2.CancelOrderRequest(order_id=order.order_id, reason="seeded")
        await retrying(lambda: shop.order.CancelOrder(cancel), tracker, 180)
    else:
        answer = await pay(shop, tracker, order)
        assert answer.success == (op.kind != "decline"), (op, answer)
        if op.kind in ("refund", "partial-refund"):
            await order_until(shop, tracker, order.order_id, (order_pb2.ORDER_STATUS_PAID,), 180)
            refund = payment_service_pb2.RefundPaymentRequest(
                payment_id=answer.payment.payment_id, reason="seeded", request_id=new_id()
            )
            if op.kind == "partial-refund":
                refund.amount.CopyFrom(usd(op.price // 2))
            refunded = await retrying(lambda: shop.payment.RefundPayment(refund), tracker, 180)
            assert refunded.refund.status == payment_pb2.REFUND_STATUS_SUCCEEDED, refunded
    final = await order_until(shop, tracker, order.order_id, (EXPECTED[op.kind],), 180)
    return int(final.status)


async def _inject(chaos: Chaos, fault: Fault) -> None:
    cluster = chaos.cluster
    chaos.fault()
    if fault.kind == "nats":
        await asyncio.to_thread(cluster.nats.stop)
        await asyncio.sleep(fault.seconds)
        await asyncio.to_thread(cluster.nats.start)
    elif fault.kind == "postgres":
        await asyncio.to_thread(cluster.postgres.stop)
        await asyncio.sleep(fault.seconds)
        await asyncio.to_thread(cluster.postgres.start)
    elif fault.kind == "kill":
        await asyncio.to_thread(cluster.kill, fault.service)
        await asyncio.sleep(fault.seconds)
        await asyncio.to_thread(cluster.restart, fault.service)
    elif fault.kind == "term":
        proc = cluster.service(fault.service)
        proc.signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        await asyncio.sleep(fault.seconds)
        await asyncio.to_thread(cluster.restart, fault.service)
    elif fault.kind == "freeze":
        proc = cluster.service(fault.service)
        proc.signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(fault.seconds)
        finally:
            proc.signal(signal.SIGCONT)
    elif fault.kind == "crash-point":
        await asyncio.to_thread(cluster.restart, fault.service, fault.point)
        # it dies at the point if traffic reaches it meanwhile; else it is simply restarted
        await asyncio.to_thread(cluster.exit_code, fault.service, fault.seconds + 5)
        await asyncio.to_thread(cluster.restart, fault.service)
    else:
        raise AssertionError(f"unknown fault {fault}")


async def test_12_seeded_random_fault_schedule(chaos: Chaos) -> None:
    the_plan = plan(SEED)
    print(f"\nCHAOS_SEED={SEED}\n{the_plan.describe()}")
    async with chaos.cluster.shop() as shop:
        workers = sorted({op.worker for op in the_plan.operations})
        customers = {w: shop.new_customer() for w in workers}
        for customer in customers.values():
            await top_up(shop, chaos.tracker, customer, 1_000_000)
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def faults() -> None:
            for fault in the_plan.faults:
                await asyncio.sleep(max(0.0, start + fault.at - loop.time()))
                await _inject(chaos, fault)

        async def worker(w: int) -> list[tuple[Operation, int]]:
            done = []
            for op in (o for o in the_plan.operations if o.worker == w):
                done.append((op, await _operate(chaos, shop, customers[w], op)))
            return done

        try:
            _, *results = await asyncio.gather(faults(), *(worker(w) for w in workers))
        except (AssertionError, grpc.RpcError) as failure:
            raise AssertionError(
                f"replay with CHAOS_SEED={SEED}\n{the_plan.describe()}\n{failure!r}"
            ) from failure
        outcomes = [outcome for per_worker in results if per_worker for outcome in per_worker]
        chaos.sagas(len(outcomes))
        assert len(outcomes) == len(the_plan.operations)
        for op, status in outcomes:
            assert status == EXPECTED[op.kind], (op, status)
