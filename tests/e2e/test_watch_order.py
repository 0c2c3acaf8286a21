"""WatchOrder (DESIGN §11) against the real mesh: the order now, then after every change of
its status, whichever Order process applied the change; bounded by the call's deadline, the
server's longest watch and the number of open streams per process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import TypeAlias

import asyncpg
import grpc
import pytest

from services.localmesh.embedded import find_free_port
from services.localmesh.mesh import HTTP_PORTS, SERVICES, LocalMesh, ServiceProcess
from shop.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from tests.e2e.conftest import rich_status
from tests.e2e.shop import Shop
from tests.ids import new_id

pytestmark = pytest.mark.e2e

S = order_pb2
REPLICA_MAX_STREAMS = 2
REPLICA_MAX_SECONDS = 3.0
WatchCall: TypeAlias = grpc.aio.UnaryStreamCall[
    order_service_pb2.WatchOrderRequest, order_service_pb2.WatchOrderResponse
]


def watch_request(order_id: str) -> order_service_pb2.WatchOrderRequest:
    return order_service_pb2.WatchOrderRequest(order_id=order_id)


async def next_order(call: WatchCall) -> order_pb2.Order | None:
    """The next message's order; None when the stream ended OK."""
    response = await asyncio.wait_for(call.read(), 30)
    if isinstance(response, order_service_pb2.WatchOrderResponse):
        return response.order
    return None


async def statuses_until(
    call: WatchCall,
    last: int,
) -> list[order_pb2.Order]:
    """Read the stream up to the message whose status is `last`."""
    seen: list[order_pb2.Order] = []
    while not seen or seen[-1].status != last:
        order = await next_order(call)
        assert order is not None, ([o.status for o in seen], await call.code())
        seen.append(order)
    return seen


async def the_rest(call: WatchCall) -> list[order_pb2.Order]:
    """Every message until the stream ends (read(), which a test may mix with the above)."""
    seen: list[order_pb2.Order] = []
    while (order := await next_order(call)) is not None:
        seen.append(order)
    return seen


@pytest.fixture
async def shop(mesh: LocalMesh) -> AsyncIterator[Shop]:
    channels = {name: grpc.aio.insecure_channel(s.target) for name, s in mesh.services.items()}
    try:
        yield Shop.connect(channels)
    finally:
        for channel in channels.values():
            await channel.close()


@pytest.fixture(scope="module")
def replica(mesh: LocalMesh) -> Iterator[ServiceProcess]:
    """A second Order process on the mesh's database and NATS, with a small stream cap and
    a short longest watch."""
    port, _ = find_free_port(0)
    process = ServiceProcess("order", port, mesh.data_dir / "logs" / "order-watch-replica.log")
    env = mesh.service_env()
    env[SERVICES["order"][1]] = str(port)
    env[HTTP_PORTS["order"][1]] = str(find_free_port(0)[0])  # not the first Order's
    env["WATCH_MAX_STREAMS"] = str(REPLICA_MAX_STREAMS)
    env["WATCH_MAX_SECONDS"] = str(REPLICA_MAX_SECONDS)
    process.start(env, None)
    try:
        LocalMesh(mesh.data_dir, services={"order": process}).wait_serving(60)
        yield process
    finally:
        process.stop()


@pytest.fixture
async def replica_orders(
    replica: ServiceProcess,
) -> AsyncIterator[order_service_pb2_grpc.OrderServiceAsyncStub]:
    async with grpc.aio.insecure_channel(replica.target) as channel:
        yield order_service_pb2_grpc.OrderServiceStub(channel)


async def test_the_stream_delivers_reserved_then_paid_for_a_saga(shop: Shop) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 10_000)
    created = await shop.create_order(customer, 2_500)
    call = shop.order.WatchOrder(watch_request(created.order_id), timeout=30)
    try:
        seen = await statuses_until(call, S.ORDER_STATUS_RESERVED)
        # the first message is the order as it is now: PENDING, or RESERVED already
        assert [o.status for o in seen] in (
            [S.ORDER_STATUS_PENDING, S.ORDER_STATUS_RESERVED],
            [S.ORDER_STATUS_RESERVED],
        )
        reserved = seen[-1]
        assert reserved.reservation_id
        assert await shop.pay(reserved)
        (paid,) = await statuses_until(call, S.ORDER_STATUS_PAID)
        assert paid.payment_id
        assert (paid.order_id, paid.items, paid.total) == (
            created.order_id,
            created.items,
            created.total,
        )
        assert paid.reservation_id == reserved.reservation_id
        assert paid.updated_at.ToDatetime() >= reserved.updated_at.ToDatetime()
        assert paid == await shop.get_order(created.order_id)  # what a read says, exactly
    finally:
        call.cancel()


async def test_the_stream_ends_when_the_order_can_change_no_more(shop: Shop) -> None:
    customer = shop.new_customer()  # no account: Credit rejects the order
    created = await shop.create_order(customer, 2_500)
    call = shop.order.WatchOrder(watch_request(created.order_id), timeout=30)
    seen = [response.order async for response in call]
    assert seen[-1].status == S.ORDER_STATUS_REJECTED
    assert seen[-1].failure_reason == "ACCOUNT_NOT_FOUND"
    assert [o.status for o in seen[:-1]] in ([], [S.ORDER_STATUS_PENDING])
    assert await call.code() == grpc.StatusCode.OK


async def test_the_stream_ends_at_its_deadline(shop: Shop) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 10_000)
    reserved = await shop.reserved_order(customer, 2_500)  # stays RESERVED: nobody pays
    started = time.monotonic()
    call = shop.order.WatchOrder(watch_request(reserved.order_id), timeout=1.0)
    first = await next_order(call)
    assert first is not None
    assert first.status == S.ORDER_STATUS_RESERVED
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await call.read()  # nothing more comes: the order does not move
    took = time.monotonic() - started
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.9 <= took < 5, took


async def test_an_unknown_order_is_not_found_and_a_bad_id_is_invalid(shop: Shop) -> None:
    call = shop.order.WatchOrder(watch_request(new_id()), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await call.read()
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    info, _ = rich_status(missing.value)
    assert info is not None
    assert info.reason == "ORDER_NOT_FOUND"
    trailers = dict(missing.value.trailing_metadata() or ())
    assert trailers.get("x-request-id"), trailers  # the stream gets its request id too

    call = shop.order.WatchOrder(watch_request("not-a-uuid"), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await call.read()
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad = rich_status(invalid.value)
    assert bad is not None
    assert [v.field for v in bad.field_violations] == ["order_id"]


async def test_a_change_applied_by_another_replica_is_seen(
    shop: Shop, replica_orders: order_service_pb2_grpc.OrderServiceAsyncStub
) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 10_000)
    reserved = await shop.reserved_order(customer, 2_500)
    call = replica_orders.WatchOrder(watch_request(reserved.order_id), timeout=30)
    await statuses_until(call, S.ORDER_STATUS_RESERVED)
    # the first Order process applies the cancel; the stream is served by the second
    await shop.order.CancelOrder(
        order_service_pb2.CancelOrderRequest(order_id=reserved.order_id, reason="changed mind")
    )
    rest = await the_rest(call)
    assert [o.status for o in rest] == [S.ORDER_STATUS_CANCELLED]
    assert rest[0].failure_reason == "changed mind"
    assert await call.code() == grpc.StatusCode.OK  # CANCELLED is terminal: the stream ends


async def test_streams_beyond_the_cap_are_resource_exhausted(
    shop: Shop, replica_orders: order_service_pb2_grpc.OrderServiceAsyncStub
) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 10_000)
    reserved = await shop.reserved_order(customer, 2_500)
    request = watch_request(reserved.order_id)
    calls = [replica_orders.WatchOrder(request, timeout=30) for _ in range(REPLICA_MAX_STREAMS)]
    try:
        for call in calls:  # each is open: it has sent the order
            await statuses_until(call, S.ORDER_STATUS_RESERVED)
        refused = replica_orders.WatchOrder(request, timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await refused.read()
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info, _ = rich_status(error.value)
        assert info is not None
        assert info.reason == "WATCH_LIMIT_REACHED"
        assert info.metadata["max_streams"] == str(REPLICA_MAX_STREAMS)
    finally:
        for call in calls:
            call.cancel()
    # a closed stream frees its place
    codes = []
    for _ in range(50):
        again = replica_orders.WatchOrder(request, timeout=30)
        try:
            await statuses_until(again, S.ORDER_STATUS_RESERVED)
        except grpc.aio.AioRpcError as still:
            codes.append(still.code())  # the server may not have seen the cancels yet
            await asyncio.sleep(0.1)
            continue
        again.cancel()
        assert set(codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        return
    raise AssertionError(f"closed streams never freed their places: {codes}")


async def test_a_stream_ends_ok_after_the_servers_longest_watch(
    shop: Shop, replica_orders: order_service_pb2_grpc.OrderServiceAsyncStub
) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 10_000)
    reserved = await shop.reserved_order(customer, 2_500)
    started = time.monotonic()
    call = replica_orders.WatchOrder(watch_request(reserved.order_id))  # no deadline
    seen = [response.order.status async for response in call]
    took = time.monotonic() - started
    assert seen == [S.ORDER_STATUS_RESERVED]
    assert await call.code() == grpc.StatusCode.OK
    assert REPLICA_MAX_SECONDS - 0.5 <= took < REPLICA_MAX_SECONDS + 5, took


async def test_a_change_made_while_the_listener_was_down_is_still_seen(
    mesh: LocalMesh, shop: Shop, replica_orders: order_service_pb2_grpc.OrderServiceAsyncStub
) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 10_000)
    reserved = await shop.reserved_order(customer, 2_500)
    call = replica_orders.WatchOrder(watch_request(reserved.order_id), timeout=30)
    await statuses_until(call, S.ORDER_STATUS_RESERVED)
    assert mesh.database_url is not None
    db = await asyncpg.connect(mesh.database_url)
    try:
        # every Order process's listening connection goes (they come back a second later)
        killed = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'shop-orders'"
            " AND (query LIKE 'LISTEN %' OR query = 'SELECT 1')"
        )
    finally:
        await db.close()
    assert killed >= 2, killed  # the mesh's Order and the replica
    # applied while nobody listens: its notification is lost, the reconnect reads it
    await shop.order.CancelOrder(order_service_pb2.CancelOrderRequest(order_id=reserved.order_id))
    rest = await the_rest(call)
    assert [o.status for o in rest] == [S.ORDER_STATUS_CANCELLED]
    assert await call.code() == grpc.StatusCode.OK
