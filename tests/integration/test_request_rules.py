"""The `buf.validate` rules of proto/ enforced by the one server interceptor, over a real socket.

The servicer here implements no checks at all: whatever the caller gets back for a bad request
comes from the rules in the contract, enforced before the handler runs (it must not run).
Each broken rule is one `google.rpc.BadRequest` field violation, next to the `ErrorInfo` every
error carries.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from services.common.grpc_server import create_server
from shop.common.v1.money_pb2 import Money
from shop.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from shop.payment.v1 import payment_service_pb2, payment_service_pb2_grpc
from tests.e2e.conftest import rich_status

pytestmark = pytest.mark.integration

ID = str(uuid.uuid4())


@dataclass
class Calls:
    seen: list[str] = field(default_factory=list)


class _Orders(order_service_pb2_grpc.OrderServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def CreateOrder(self, request: Any, context: Any) -> Any:
        self.calls.seen.append("CreateOrder")
        return order_service_pb2.CreateOrderResponse()

    async def CancelOrder(self, request: Any, context: Any) -> Any:
        self.calls.seen.append("CancelOrder")
        return order_service_pb2.CancelOrderResponse()


class _Payments(payment_service_pb2_grpc.PaymentServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def ListPayments(self, request: Any, context: Any) -> Any:
        self.calls.seen.append("ListPayments")
        return payment_service_pb2.ListPaymentsResponse()


@dataclass
class Mesh:
    orders: Any
    payments: Any
    calls: Calls


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    calls = Calls()
    orders, payments = _Orders(calls), _Payments(calls)  # type: ignore[abstract]
    server = await create_server(
        "127.0.0.1:0",
        [
            lambda s: order_service_pb2_grpc.add_OrderServiceServicer_to_server(orders, s),
            lambda s: payment_service_pb2_grpc.add_PaymentServiceServicer_to_server(payments, s),
        ],
        ["shop.order.v1.OrderService", "shop.payment.v1.PaymentService"],
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield Mesh(
                order_service_pb2_grpc.OrderServiceStub(channel),
                payment_service_pb2_grpc.PaymentServiceStub(channel),
                calls,
            )
    finally:
        await server.stop(0)


async def refused(call: Any) -> dict[str, str]:
    """field -> description of the INVALID_ARGUMENT's BadRequest."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    info, bad = rich_status(raised.value)
    assert info is not None
    assert info.reason == "INVALID_ARGUMENT"
    assert bad is not None
    return {v.field: v.description for v in bad.field_violations}


def item(**fields: Any) -> order_pb2.OrderItem:
    values: dict[str, Any] = {"sku": "SKU-1", "quantity": 1, "unit_price": Money(minor_units=100)}
    return order_pb2.OrderItem(**(values | fields))


async def test_every_broken_rule_is_named_with_a_message_and_the_handler_never_runs(
    mesh: Mesh,
) -> None:
    request = order_service_pb2.CreateOrderRequest(
        customer_id="not-a-uuid",
        items=[
            item(sku="   "),
            item(quantity=0, unit_price=Money(currency_code="ZZZ", minor_units=-1)),
            item(sku="x" * 129),
        ],
    )
    named = await refused(mesh.orders.CreateOrder(request, timeout=10))
    assert named == {
        "customer_id": "must be a valid UUID",
        "items[0].sku": "is required",
        "items[1].quantity": "must be greater than 0",
        "items[1].unit_price": "minor_units must not be negative",
        "items[1].unit_price.currency_code": "must be an active ISO 4217 currency code, e.g. USD",
        "items[2].sku": "must be at most 128 characters",
        "request_id": "value is required",
    }
    assert mesh.calls.seen == []


async def test_a_valid_request_reaches_the_handler(mesh: Mesh) -> None:
    request = order_service_pb2.CreateOrderRequest(
        customer_id=ID, items=[item(), item(sku="B", unit_price=Money())], request_id=ID
    )
    await mesh.orders.CreateOrder(request, timeout=10)
    await mesh.payments.ListPayments(payment_service_pb2.ListPaymentsRequest(order_id=ID))
    assert mesh.calls.seen == ["CreateOrder", "ListPayments"]


async def test_too_many_items_and_nul_characters_are_refused(mesh: Mesh) -> None:
    many = order_service_pb2.CreateOrderRequest(customer_id=ID, items=[item()] * 501, request_id=ID)
    assert set(await refused(mesh.orders.CreateOrder(many, timeout=10))) == {"items"}
    cancel = order_service_pb2.CancelOrderRequest(order_id=ID, reason="a\x00b")
    assert await refused(mesh.orders.CancelOrder(cancel, timeout=10)) == {
        "reason": "must not contain NUL characters"
    }
    assert mesh.calls.seen == []


@pytest.mark.parametrize(
    "request_fields", [{}, {"order_id": ID, "customer_id": ID}], ids=["neither", "both"]
)
async def test_list_payments_needs_exactly_one_filter_and_names_both(
    mesh: Mesh, request_fields: dict[str, str]
) -> None:
    request = payment_service_pb2.ListPaymentsRequest(**request_fields)  # type: ignore[arg-type]
    named = await refused(mesh.payments.ListPayments(request, timeout=10))
    assert set(named) == {"order_id", "customer_id"}
    assert all("order_id, customer_id" in text for text in named.values()), named
    assert mesh.calls.seen == []
