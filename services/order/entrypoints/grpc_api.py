"""OrderService over gRPC: call a handler, map to proto. No business rules here; the requests'
field rules are in proto/ (buf.validate), checked before any method here runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from services.common.idempotency import run_idempotent
from services.common.paging import Fetched, PageCursor, Pager
from services.common.validation import canonical_id, money, page_size, refuse
from services.order.adapters.proto_mapping import order_to_proto
from services.order.adapters.status_feed import StatusFeed
from services.order.adapters.unit_of_work import SqlOrderUnitOfWork
from services.order.domain.model import LineItem, Order, item_violations
from services.order.service_layer import handlers, watch
from shop.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def line_items(items: Sequence[order_pb2.OrderItem]) -> list[LineItem]:
    """The items as domain values; each item's fields were checked by the rules, so only the
    order-level rules are left (one currency, a total above zero that fits in int64)."""
    parsed = [LineItem(item.sku, item.quantity, money(item.unit_price)) for item in items]
    refuse(item_violations(parsed))
    return parsed


class OrderApi(order_service_pb2_grpc.OrderServiceServicer):
    def __init__(
        self,
        unit_of_work: Callable[[], SqlOrderUnitOfWork],
        pager: Pager,
        feed: StatusFeed,
        watch_max_seconds: float,
    ) -> None:
        self.unit_of_work = unit_of_work
        self.pager = pager
        self.feed = feed
        self.watch_max_seconds = watch_max_seconds

    async def _read_order(self, order_id: str) -> Order:
        async with self.unit_of_work().autocommit() as uow:
            return await handlers.get_order(uow, order_id)

    async def CreateOrder(
        self, request: order_service_pb2.CreateOrderRequest, context: Context
    ) -> order_service_pb2.CreateOrderResponse:
        customer_id = canonical_id(request.customer_id)
        items = line_items(request.items)
        request_id = canonical_id(request.request_id)

        async def work(uow: SqlOrderUnitOfWork) -> order_service_pb2.CreateOrderResponse:
            order = await handlers.create_order(uow, customer_id, items)
            return order_service_pb2.CreateOrderResponse(order=order_to_proto(order))

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
        order = await self._read_order(canonical_id(request.order_id))
        return order_service_pb2.GetOrderResponse(order=order_to_proto(order))

    async def ListOrders(
        self, request: order_service_pb2.ListOrdersRequest, context: Context
    ) -> order_service_pb2.ListOrdersResponse:
        customer_id = canonical_id(request.customer_id)

        async def fetch(after: PageCursor | None, limit: int) -> Fetched[Order]:
            async with self.unit_of_work().autocommit() as uow:
                return await handlers.list_orders(uow, customer_id, after, limit)

        orders, token = await self.pager.serve(
            request.page_token,
            page_size(request.page_size),
            f"customer_id={customer_id}",
            fetch,
            lambda order: order.order_id,
            order_to_proto,
        )
        return order_service_pb2.ListOrdersResponse(orders=orders, next_page_token=token)

    async def CancelOrder(
        self, request: order_service_pb2.CancelOrderRequest, context: Context
    ) -> order_service_pb2.CancelOrderResponse:
        order_id = canonical_id(request.order_id)
        async with self.unit_of_work() as uow:
            order = await handlers.cancel_order(uow, order_id, request.reason.strip())
        return order_service_pb2.CancelOrderResponse(order=order_to_proto(order))

    async def WatchOrder(
        self, request: order_service_pb2.WatchOrderRequest, context: Context
    ) -> AsyncIterator[order_service_pb2.WatchOrderResponse]:
        key = canonical_id(request.order_id)
        with self.feed.subscribe(key) as changes:  # first: no change slips in after the read
            first = await self._read_order(key)
            async for order in watch.follow(
                first, changes, lambda: self._read_order(key), self.watch_max_seconds
            ):
                yield order_service_pb2.WatchOrderResponse(order=order_to_proto(order))
