"""Holds expire: a mesh of its own whose holds live two seconds (RESERVATION_TTL_SECONDS),
on its own NATS so its durable consumers cannot take the session mesh's events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from services.localmesh.mesh import LocalMesh
from shop.credit.v1 import credit_pb2
from shop.order.v1 import order_pb2
from tests.conftest import Infra
from tests.e2e.conftest import rich_status
from tests.e2e.shop import Shop

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def short_hold_mesh(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    mesh = LocalMesh(
        data_dir=tmp_path_factory.mktemp("short-holds"),
        database_url=asyncio.run(infra.create_database("expiry")),
        nats_url=None,  # an embedded NATS of its own
        ports={"order": 0, "credit": 0, "payment": 0},
        extra_env={"RESERVATION_TTL_SECONDS": "2", "EXPIRY_SWEEP_SECONDS": "0.3"},
    )
    mesh.start()
    yield mesh
    mesh.stop()


@pytest.fixture
async def shop(short_hold_mesh: LocalMesh) -> AsyncIterator[Shop]:
    services = short_hold_mesh.services
    channels = {name: grpc.aio.insecure_channel(s.target) for name, s in services.items()}
    client = Shop.connect(channels)
    try:
        yield client
        await client.check_books()
    finally:
        for channel in channels.values():
            await channel.close()


async def test_an_expired_hold_cancels_the_order_and_cannot_be_paid(shop: Shop) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 9000)
    order = await shop.reserved_order(customer, 7000)
    assert (await shop.account(customer)).reserved.minor_units == 7000

    cancelled = await shop.order_in(order.order_id, order_pb2.ORDER_STATUS_CANCELLED)
    assert cancelled.failure_reason == "RESERVATION_EXPIRED"
    hold = await shop.reservation(order.reservation_id)
    assert hold.state == credit_pb2.RESERVATION_STATE_EXPIRED
    assert hold.release_reason == "EXPIRED"
    account = await shop.account(customer)
    assert (account.available.minor_units, account.reserved.minor_units) == (9000, 0)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await shop.pay(order)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = rich_status(raised.value)
    assert info is not None
    assert info.reason in ("ORDER_NOT_PAYABLE", "RESERVATION_EXPIRED")
    assert await shop.payments_of(order.order_id) == []
