"""The server interceptor every service runs, over a real socket.

Every call's request id (`x-request-id`, the caller's or a new UUID) comes back in the
response's trailing metadata, on success and on every kind of error, next to the error's
`google.rpc.Status` details: it is what a caller quotes when asking about a failed call.

A method declared in a proto but not implemented answers UNIMPLEMENTED, as gRPC says, not
INTERNAL: the generated base servicer raises NotImplementedError, which the error-mapping
interceptor must not turn into an internal error (the contract suite relies on it)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common.errors import NotFound
from services.common.grpc_server import REQUEST_ID_HEADER, create_server
from shop.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc

pytestmark = pytest.mark.integration

# Well-formed ids (the request rules refuse anything else before the servicer runs).
FOUND, MISSING, BOOM = (str(uuid.UUID(int=n)) for n in (1, 2, 3))


class _Orders(order_service_pb2_grpc.OrderServiceServicer):  # ListOrders stays unimplemented
    async def GetOrder(self, request: Any, context: Any) -> Any:
        if request.order_id == MISSING:
            raise NotFound("order missing does not exist", "ORDER_NOT_FOUND")
        if request.order_id == BOOM:
            raise RuntimeError("a bug")
        return order_service_pb2.GetOrderResponse(order=order_pb2.Order(order_id=request.order_id))


@pytest.fixture
async def stub() -> AsyncIterator[Any]:  # the generated stub types calls as sync
    orders = _Orders()  # type: ignore[abstract]
    server = await create_server(
        "127.0.0.1:0",
        [lambda s: order_service_pb2_grpc.add_OrderServiceServicer_to_server(orders, s)],
        ["shop.order.v1.OrderService"],
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield order_service_pb2_grpc.OrderServiceStub(channel)
    finally:
        await server.stop(0)


def _request_id(metadata: Any) -> str:
    return str(dict(metadata or ())[REQUEST_ID_HEADER])


async def test_a_successful_call_echoes_the_callers_request_id(
    stub: Any,
) -> None:
    call = stub.GetOrder(
        order_service_pb2.GetOrderRequest(order_id=FOUND),
        metadata=((REQUEST_ID_HEADER, "req-42"),),
        timeout=10,
    )
    assert (await call).order.order_id == FOUND
    assert _request_id(await call.trailing_metadata()) == "req-42"


async def test_a_call_without_one_gets_a_new_uuid(
    stub: Any,
) -> None:
    call = stub.GetOrder(order_service_pb2.GetOrderRequest(order_id=FOUND), timeout=10)
    await call
    assert uuid.UUID(_request_id(await call.trailing_metadata()))


@pytest.mark.parametrize(
    ("order_id", "code", "reason"),
    [
        (MISSING, grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND"),
        (BOOM, grpc.StatusCode.INTERNAL, "INTERNAL"),
    ],
)
async def test_an_error_carries_the_request_id_and_its_details(
    stub: Any, order_id: str, code: grpc.StatusCode, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.GetOrder(
            order_service_pb2.GetOrderRequest(order_id=order_id),
            metadata=((REQUEST_ID_HEADER, "req-7"),),
            timeout=10,
        )
    assert failed.value.code() == code
    assert _request_id(failed.value.trailing_metadata()) == "req-7"
    status = rpc_status.from_call(failed.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == reason


async def test_a_declared_but_unimplemented_method_is_unimplemented_with_its_request_id(
    stub: Any,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.ListOrders(
            order_service_pb2.ListOrdersRequest(customer_id=FOUND),
            metadata=((REQUEST_ID_HEADER, "req-8"),),
            timeout=10,
        )
    assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "ListOrders" in (failed.value.details() or "")
    assert _request_id(failed.value.trailing_metadata()) == "req-8"
