"""Scenario 10: a rolling restart under load. Each service in turn gets SIGTERM while sagas
run: its health goes NOT_SERVING first (seen on a Health.Watch stream, as a load balancer
sees it), an RPC in flight at that moment finishes, the process exits 0, and clients that
retry UNAVAILABLE with the same request_id see every saga complete."""

from __future__ import annotations

import asyncio
import signal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop.order.v1 import order_pb2
from shop.payment.v1 import payment_service_pb2
from tests.chaos.conftest import Chaos
from tests.chaos.load import approved_price, create_order, order_until, saga, top_up
from tests.e2e.shop import Shop

pytestmark = pytest.mark.chaos

WORKERS = 6


async def _watch(target: str, service: str, seen: list[str], watching: asyncio.Event) -> None:
    """Record every status the server pushes on a Health.Watch stream until it ends."""
    async with grpc.aio.insecure_channel(target) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=service)
        )
        try:
            async for update in stream:
                seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(update.status))
                watching.set()
        except grpc.aio.AioRpcError as error:
            seen.append(error.code().name)


async def test_10_rolling_sigterm_restart_under_load(chaos: Chaos) -> None:
    cluster, tracker = chaos.cluster, chaos.tracker
    # a slow gateway keeps ProcessPayment calls in flight when Payment is told to stop
    await asyncio.to_thread(
        cluster.restart, "payment", None, True, {"PAYMENT_GATEWAY_LATENCY_MS": "800"}
    )
    async with cluster.shop() as shop:
        customers = [shop.new_customer() for _ in range(WORKERS)]
        for customer in customers:
            await top_up(shop, tracker, customer, 1_000_000)
        rolling_done = asyncio.Event()
        statuses: list[int] = []

        async def worker(i: int) -> None:
            n = 0
            while not rolling_done.is_set() or n < 2:
                statuses.append(await saga(shop, tracker, customers[i], approved_price(n + i)))
                n += 1

        workers = [asyncio.create_task(worker(i)) for i in range(WORKERS)]
        try:
            # Payment first, while its dependencies are steady: its in-flight call must
            # finish, not meet a dependency that is itself restarting
            for name in ("payment", "order", "credit"):
                await _roll(chaos, shop, name)
        finally:
            rolling_done.set()
            results = await asyncio.gather(*workers, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures
        chaos.sagas(len(statuses))
        assert statuses == [order_pb2.ORDER_STATUS_PAID] * len(statuses)
        assert len(statuses) >= 2 * WORKERS


async def _roll(chaos: Chaos, shop: Shop, name: str) -> None:
    cluster, tracker = chaos.cluster, chaos.tracker
    proc = cluster.service(name)
    seen: list[str] = []
    watching = asyncio.Event()
    watcher = asyncio.create_task(_watch(proc.target, proc.service_name, seen, watching))
    await asyncio.wait_for(watching.wait(), 30)
    in_flight = None
    if name == "payment":  # a call the gateway holds for 800 ms while we send SIGTERM
        customer = shop.new_customer()
        await top_up(shop, tracker, customer, 10_000)
        created = await create_order(shop, tracker, customer, 2_000)
        order = await order_until(
            shop, tracker, created.order_id, (order_pb2.ORDER_STATUS_RESERVED,)
        )
        request = shop.payment_request(order)

        async def paying() -> payment_service_pb2.ProcessPaymentResponse:
            return await shop.payment.ProcessPayment(request, timeout=30)

        in_flight = asyncio.create_task(paying())
        await asyncio.sleep(0.3)
    proc.signal(signal.SIGTERM)
    chaos.fault()
    code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0, f"{name} exited with {code} after SIGTERM"
    await asyncio.wait_for(watcher, 30)
    assert seen[0] == "SERVING", seen
    assert "NOT_SERVING" in seen, f"{name}: health never said NOT_SERVING: {seen}"
    if in_flight is not None:
        answer = await in_flight  # finished during the grace period, not cut
        assert answer.success, answer
        chaos.sagas()
    await asyncio.to_thread(cluster.restart, name, None, True, _extra(name))


def _extra(name: str) -> dict[str, str] | None:
    return {"PAYMENT_GATEWAY_LATENCY_MS": "800"} if name == "payment" else None
