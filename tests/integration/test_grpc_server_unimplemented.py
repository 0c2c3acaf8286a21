"""A method declared in a proto but not implemented answers UNIMPLEMENTED, as gRPC says, not
INTERNAL: the generated base servicer raises NotImplementedError, which the error-mapping
interceptor must not turn into an internal error (the contract suite relies on it)."""

from __future__ import annotations

import grpc
import pytest

from services.common.grpc_server import create_server
from shop.order.v1 import order_service_pb2, order_service_pb2_grpc

pytestmark = pytest.mark.integration


async def test_a_declared_but_unimplemented_method_is_unimplemented() -> None:
    bare = order_service_pb2_grpc.OrderServiceServicer()  # type: ignore[abstract]
    server = await create_server(
        "127.0.0.1:0",
        [lambda s: order_service_pb2_grpc.add_OrderServiceServicer_to_server(bare, s)],
        ["shop.order.v1.OrderService"],
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = order_service_pb2_grpc.OrderServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetOrder(order_service_pb2.GetOrderRequest(), timeout=10)
    finally:
        await server.stop(0)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "GetOrder" in (caught.value.details() or "")
