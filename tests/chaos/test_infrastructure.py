"""Scenarios 4 and 5: the infrastructure goes away under a stream of sagas.

4. NATS stopped for several seconds, then started again on the same port and store: the
   outbox relays and the durable consumers resume by themselves and every saga completes.
5. PostgreSQL restarted in the middle of traffic: callers get UNAVAILABLE (never INTERNAL or
   UNKNOWN) while it is down, the connection pools recover, every saga completes.
"""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from shop.credit.v1 import credit_service_pb2
from shop.order.v1 import order_pb2
from tests.chaos.conftest import Chaos
from tests.chaos.load import approved_price, saga, top_up
from tests.e2e.shop import Shop

pytestmark = pytest.mark.chaos

SAGAS = 24


async def _stream_of_sagas(
    chaos: Chaos, shop: Shop, customers: list[str], fault_after: float
) -> list[int]:
    """Start sagas one after another over a few seconds; return their final statuses."""

    async def one(i: int) -> int:
        await asyncio.sleep(i * fault_after * 2 / SAGAS)  # spread around the fault
        return await saga(shop, chaos.tracker, customers[i % len(customers)], approved_price(i))

    chaos.sagas(SAGAS)
    return await asyncio.gather(*(one(i) for i in range(SAGAS)))


async def test_4_nats_down_mid_stream(chaos: Chaos) -> None:
    cluster = chaos.cluster
    async with cluster.shop() as shop:
        customers = [shop.new_customer() for _ in range(6)]
        for customer in customers:
            await top_up(shop, chaos.tracker, customer, 100_000)

        async def outage() -> None:
            await asyncio.sleep(2.0)
            await asyncio.to_thread(cluster.nats.stop)
            chaos.fault()
            await asyncio.sleep(6.0)
            await asyncio.to_thread(cluster.nats.start)

        statuses, _ = await asyncio.gather(
            _stream_of_sagas(chaos, shop, customers, fault_after=2.0), outage()
        )
        assert statuses == [order_pb2.ORDER_STATUS_PAID] * SAGAS


async def test_5_postgres_restart_mid_traffic(chaos: Chaos) -> None:
    cluster = chaos.cluster
    codes: list[grpc.StatusCode] = []
    async with cluster.shop() as shop:
        customers = [shop.new_customer() for _ in range(6)]
        for customer in customers:
            await top_up(shop, chaos.tracker, customer, 100_000)
        down = asyncio.Event()

        async def outage() -> None:
            await asyncio.sleep(2.0)
            await asyncio.to_thread(cluster.postgres.stop)
            chaos.fault()
            down.set()
            await asyncio.sleep(5.0)
            await asyncio.to_thread(cluster.postgres.start)
            down.clear()

        async def probe() -> None:
            """Reads while the database is down must fail UNAVAILABLE, nothing else."""
            await down.wait()
            request = credit_service_pb2.GetCreditAccountRequest(customer_id=customers[0])
            while down.is_set():
                try:
                    await shop.credit.GetCreditAccount(request, timeout=10)
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())
                await asyncio.sleep(random.uniform(0.1, 0.3))

        statuses, _, _ = await asyncio.gather(
            _stream_of_sagas(chaos, shop, customers, fault_after=2.0), outage(), probe()
        )
        assert statuses == [order_pb2.ORDER_STATUS_PAID] * SAGAS
        assert codes, "no call was made while PostgreSQL was down"
        assert set(codes) <= {grpc.StatusCode.UNAVAILABLE}, codes
