"""OrderService over gRPC: call a handler, map to proto. No business rules here; the requests'
field rules are in proto/ (buf.validate), checked before any method here runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

from services.common.idempotency import run_idempotent
from services.common.paging import decode_page_token, next_page_token
from services.common.uow import UnitOfWork
from services.common.validation import canonical_id, money, page_size, refuse
from services.order.adapters.proto_mapping import order_to_proto
from services.order.domain.model import LineItem, item_violations
from services.order.service_layer import handlers
from shop.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def line_items(items: Sequence[order_pb2.OrderItem]) -> list[LineItem]:
    """The items as domain values; each item's fields were checked by the rules, so only the
    order-level rules are left (one currency, a total above zero that fits in int64)."""
    parsed = [LineItem(item.sku, item.quantity, money(item.unit_price)) for item in items]
    refuse(item_violations(parsed))
    return parsed


class OrderApi(order_service_pb2_grpc.OrderServiceServicer):
    def __init__(self, unit_of_work: Callable[[], UnitOfWork]) -> None:
        self.unit_of_work = unit_of_work

    async def CreateOrder(
        self, request: order_service_pb2.CreateOrderRequest, context: Context
    ) -> order_service_pb2.CreateOrderResponse:
        customer_id = canonical_id(request.customer_id)
        items = line_items(request.items)
        request_id = canonical_id(request.request_id)

        async def work(uow: UnitOfWork) -> order_service_pb2.CreateOrderResponse:
            stored = await handlers.create_order(uow, customer_id, items)
            return order_service_pb2.CreateOrderResponse(order=order_to_proto(stored))

        return await run_idempotent(
            self.unit_of_work,
            "CreateOrder",
            request_id,
            request,
            order_service_pb2.CreateOrderResponse,
            work,
        )

    async def GetOrder(
        self, request: order_service_pb2.GetOrderRequest, context: Context
    ) -> order_service_pb2.GetOrderResponse:
        async with self.unit_of_work().autocommit() as uow:
            stored = await handlers.get_order(uow, canonical_id(request.order_id))
        return order_service_pb2.GetOrderResponse(order=order_to_proto(stored))

    async def ListOrders(
        self, request: order_service_pb2.ListOrdersRequest, context: Context
    ) -> order_service_pb2.ListOrdersResponse:
        customer_id = canonical_id(request.customer_id)
        size = page_size(request.page_size)
        query = f"customer_id={customer_id}"
        after = decode_page_token(request.page_token, query)
        async with self.unit_of_work().autocommit() as uow:
            rows = await handlers.list_orders(uow, customer_id, after, size + 1)
        count, token = next_page_token([row.cursor for row in rows], size, query)
        return order_service_pb2.ListOrdersResponse(
            orders=[order_to_proto(row) for row in rows[:count]], next_page_token=token
        )

    async def CancelOrder(
        self, request: order_service_pb2.CancelOrderRequest, context: Context
    ) -> order_service_pb2.CancelOrderResponse:
        order_id = canonical_id(request.order_id)
        async with self.unit_of_work() as uow:
            stored = await handlers.cancel_order(uow, order_id, request.reason.strip())
        return order_service_pb2.CancelOrderResponse(order=order_to_proto(stored))
