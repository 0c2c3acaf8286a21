"""Scenario 11: two instances of every service (separate processes on different ports, same
database and NATS, as Kubernetes replicas run), a load of sagas through both, one instance
of each SIGKILLed mid-run.

The durable consumers share the work (both instances bind the same durable), the outbox
relays (`FOR UPDATE SKIP LOCKED`) never publish a row twice, the two expiry sweepers race
over holds made overdue at once and release each exactly once, and nothing is lost or
doubled: the invariants check every event in the streams, inboxes, holds and balances.
"""

from __future__ import annotations

import asyncio

import pytest

from shop.order.v1 import order_pb2
from tests.chaos.conftest import Chaos
from tests.chaos.load import approved_price, create_order, order_until, saga, top_up

pytestmark = pytest.mark.chaos

WORKERS = 6
OVERDUE = 12


async def test_11_two_instances_of_everything_kill_one_of_each(chaos: Chaos) -> None:
    cluster, tracker = chaos.cluster, chaos.tracker
    replicas = {}
    for name in ("order", "credit"):
        replicas[name] = await asyncio.to_thread(cluster.start_replica, name)
    # Payment (both instances) reaches either instance of Order and Credit
    both = {name: f"ipv4:{cluster.target(name)},{replicas[name].target}" for name in replicas}
    dependencies = {"ORDER_TARGET": both["order"], "CREDIT_TARGET": both["credit"]}
    await asyncio.to_thread(cluster.restart, "payment", None, True, dependencies)
    replicas["payment"] = await asyncio.to_thread(cluster.start_replica, "payment", dependencies)
    targets = {
        name: f"ipv4:{cluster.target(name)},{replica.target}" for name, replica in replicas.items()
    }

    async with cluster.shop(targets, round_robin=True) as shop:
        customers = [shop.new_customer() for _ in range(WORKERS)]
        for customer in customers:
            await top_up(shop, tracker, customer, 1_000_000)

        # holds made overdue at once ("the clock jumps"): both sweepers race for them
        created = [await create_order(shop, tracker, customers[0], 500) for _ in range(OVERDUE)]
        overdue = [
            await order_until(shop, tracker, o.order_id, (order_pb2.ORDER_STATUS_RESERVED,))
            for o in created
        ]
        db = await cluster.db()
        try:
            await db.execute(
                "UPDATE credits.reservations SET expires_at = now() - interval '1 second'"
                " WHERE order_id = ANY($1::uuid[])",
                [o.order_id for o in overdue],
            )
        finally:
            await db.close()
        chaos.fault()
        chaos.sagas(OVERDUE)

        statuses: list[int] = []
        killing_done = asyncio.Event()

        async def worker(i: int) -> None:
            n = 0
            while not killing_done.is_set() or n < 3:
                statuses.append(await saga(shop, tracker, customers[i], approved_price(n + i)))
                n += 1

        async def killer() -> None:
            try:
                await asyncio.sleep(2.0)
                for name in ("credit", "order", "payment"):
                    await asyncio.to_thread(cluster.kill, name)  # the first instance of each
                    chaos.fault()
                    await asyncio.sleep(1.5)
            finally:
                killing_done.set()

        results = await asyncio.gather(
            *(worker(i) for i in range(WORKERS)), killer(), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures
        chaos.sagas(len(statuses))
        assert statuses == [order_pb2.ORDER_STATUS_PAID] * len(statuses)
        for order in overdue:
            final = await order_until(
                shop, tracker, order.order_id, (order_pb2.ORDER_STATUS_CANCELLED,)
            )
            assert final.status == order_pb2.ORDER_STATUS_CANCELLED
        # the second instances carried the load alone after the first ones died
        for name, replica in replicas.items():
            assert replica.process is not None, name
            assert replica.process.poll() is None, f"the second {name} instance died"
