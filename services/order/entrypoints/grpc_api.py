"""OrderService over gRPC: validate, call a handler, map to proto. No business rules here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from services.common.idempotency import run_idempotent
from services.common.money import DEFAULT_CURRENCY, is_known_currency
from services.common.paging import PageCursor, Pager
from services.common.uow import UnitOfWork
from services.common.validation import Validator
from services.order.adapters.proto_mapping import order_to_proto
from services.order.adapters.repository import StoredOrder
from services.order.adapters.status_feed import StatusFeed
from services.order.domain.model import (
    MAX_ITEMS,
    MAX_REASON_LENGTH,
    MAX_SKU_LENGTH,
    LineItem,
    item_violations,
)
from services.order.service_layer import handlers, watch
from shop.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]


def validate_items(v: Validator, items: Sequence[order_pb2.OrderItem]) -> list[LineItem]:
    """Every bad item field at once; the order-level rules (one currency, a total above
    zero that fits in int64) only when each item is well-formed on its own."""
    if not items:
        v.add("items", "at least one item is required")
        return []
    if len(items) > MAX_ITEMS:
        v.add("items", f"at most {MAX_ITEMS} items per order")
        return []
    before = len(v.violations)
    parsed: list[LineItem] = []
    first_currency = ""
    for i, item in enumerate(items):
        field = f"items[{i}]"
        sku_ok = (
            bool(item.sku.strip()) and len(item.sku) <= MAX_SKU_LENGTH and "\x00" not in item.sku
        )
        if not item.sku.strip():
            v.add(f"{field}.sku", "is required")
        elif len(item.sku) > MAX_SKU_LENGTH:
            v.add(f"{field}.sku", f"must be at most {MAX_SKU_LENGTH} characters")
        elif "\x00" in item.sku:  # PostgreSQL text cannot hold it
            v.add(f"{field}.sku", "must not contain NUL characters")
        if item.quantity <= 0:
            v.add(f"{field}.quantity", "must be greater than zero")
        has_price = item.HasField("unit_price")
        price = v.money(
            f"{field}.unit_price", item.unit_price if has_price else None, positive=False
        )
        # Mixed currencies are reported whatever else is wrong with the item.
        currency = (item.unit_price.currency_code or DEFAULT_CURRENCY) if has_price else ""
        if is_known_currency(currency):
            if not first_currency:
                first_currency = currency
            elif currency != first_currency:
                v.add(
                    f"{field}.unit_price.currency_code",
                    f"all items must be in one currency ({first_currency}), got {currency}",
                )
        if sku_ok and item.quantity > 0 and price is not None:
            parsed.append(LineItem(item.sku, item.quantity, price))
    if len(v.violations) == before:
        for problem in item_violations(parsed):
            v.add(problem.field, problem.description)
    return parsed


def _cursor(stored: StoredOrder) -> PageCursor:
    return stored.cursor


class OrderApi(order_service_pb2_grpc.OrderServiceServicer):
    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        pager: Pager,
        feed: StatusFeed,
        watch_max_seconds: float,
    ) -> None:
        self.unit_of_work = unit_of_work
        self.pager = pager
        self.feed = feed
        self.watch_max_seconds = watch_max_seconds

    async def _read_order(self, order_id: str) -> StoredOrder:
        async with self.unit_of_work().autocommit() as uow:
            return await handlers.get_order(uow, order_id)

    async def CreateOrder(
        self, request: order_service_pb2.CreateOrderRequest, context: Context
    ) -> order_service_pb2.CreateOrderResponse:
        v = Validator()
        customer_id = v.uuid("customer_id", request.customer_id)
        items = validate_items(v, request.items)
        request_id = v.uuid("request_id", request.request_id)
        v.check()
        assert customer_id
        assert request_id

        async def work(uow: UnitOfWork) -> order_service_pb2.CreateOrderResponse:
            stored = await handlers.create_order(uow, str(customer_id), items)
            return order_service_pb2.CreateOrderResponse(order=order_to_proto(stored))

        return await run_idempotent(
            self.unit_of_work,
            "CreateOrder",
            str(request_id),
            request,
            order_service_pb2.CreateOrderResponse,
            work,
        )

    async def GetOrder(
        self, request: order_service_pb2.GetOrderRequest, context: Context
    ) -> order_service_pb2.GetOrderResponse:
        v = Validator()
        order_id = v.uuid("order_id", request.order_id)
        v.check()
        stored = await self._read_order(str(order_id))
        return order_service_pb2.GetOrderResponse(order=order_to_proto(stored))

    async def ListOrders(
        self, request: order_service_pb2.ListOrdersRequest, context: Context
    ) -> order_service_pb2.ListOrdersResponse:
        v = Validator()
        customer_id = v.uuid("customer_id", request.customer_id)
        page_size = v.page_size("page_size", request.page_size)
        v.check()
        query = f"customer_id={customer_id}"
        after = self.pager.decode(request.page_token, query)
        async with self.unit_of_work().autocommit() as uow:
            fetched = await handlers.list_orders(uow, str(customer_id), after, page_size + 1)
        orders, token = self.pager.page(
            fetched.rows,
            page_size,
            query,
            _cursor,
            order_to_proto,
            cut_short=fetched.cut_short,
        )
        return order_service_pb2.ListOrdersResponse(orders=orders, next_page_token=token)

    async def CancelOrder(
        self, request: order_service_pb2.CancelOrderRequest, context: Context
    ) -> order_service_pb2.CancelOrderResponse:
        v = Validator()
        order_id = v.uuid("order_id", request.order_id)
        if len(request.reason) > MAX_REASON_LENGTH:
            v.add("reason", f"must be at most {MAX_REASON_LENGTH} characters")
        elif "\x00" in request.reason:  # PostgreSQL text cannot hold it
            v.add("reason", "must not contain NUL characters")
        v.check()
        async with self.unit_of_work() as uow:
            stored = await handlers.cancel_order(uow, str(order_id), request.reason.strip())
        return order_service_pb2.CancelOrderResponse(order=order_to_proto(stored))

    async def WatchOrder(
        self, request: order_service_pb2.WatchOrderRequest, context: Context
    ) -> AsyncIterator[order_service_pb2.WatchOrderResponse]:
        v = Validator()
        order_id = v.uuid("order_id", request.order_id)
        v.check()
        key = str(order_id)
        with self.feed.subscribe(key) as changes:  # first: no change slips in after the read
            first = await self._read_order(key)
            async for stored in watch.follow(
                first, changes, lambda: self._read_order(key), self.watch_max_seconds
            ):
                yield order_service_pb2.WatchOrderResponse(order=order_to_proto(stored))
