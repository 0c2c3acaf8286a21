"""Order use cases: plain functions over a unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from services.common.errors import OrderNotFound
from services.common.events import new_event
from services.common.paging import Fetched, PageCursor
from services.common.proto_mapping import money_to_proto
from services.order.adapters.proto_mapping import items_to_proto
from services.order.adapters.repository import StoredOrder
from services.order.domain.model import LineItem, Order
from services.order.service_layer.ports import OrderUnitOfWork
from shop.order.v1 import events_pb2


async def create_order(
    uow: OrderUnitOfWork, customer_id: str, items: Sequence[LineItem]
) -> StoredOrder:
    """A PENDING order and its orders.created, in one transaction; no other service is
    called, so ordering works while Credit or Payment is down."""
    order = Order.create(str(uuid.uuid4()), customer_id, items)
    stored = await uow.orders.add(order)
    uow.emit(
        new_event(
            events_pb2.OrderCreated,
            order_id=order.order_id,
            customer_id=order.customer_id,
            items=items_to_proto(order.items),
            total=money_to_proto(order.total),
        )
    )
    return stored


async def get_order(uow: OrderUnitOfWork, order_id: str) -> StoredOrder:
    stored = await uow.orders.get(order_id)
    if stored is None:
        raise OrderNotFound(order_id)
    return stored


async def list_orders(
    uow: OrderUnitOfWork, customer_id: str, after: PageCursor | None, limit: int
) -> Fetched[StoredOrder]:
    return await uow.orders.list_for_customer(customer_id, after, limit)


async def cancel_order(uow: OrderUnitOfWork, order_id: str, reason: str) -> StoredOrder:
    """PENDING/RESERVED → CANCELLED with orders.cancelled (Credit releases the hold).

    The row lock orders this against a saga event for the same order: either the event
    applies first and the cancel sees its outcome, or the cancel wins and the event is late."""
    orders = uow.orders
    stored = await orders.get(order_id, for_update=True)
    if stored is None:
        raise OrderNotFound(order_id)
    order = stored.order
    if not order.cancel(reason):
        return stored  # already cancelled: same answer, no second event
    saved = await orders.save(order)
    uow.emit(cancelled_event(order))
    return saved


def cancelled_event(order: Order) -> events_pb2.OrderCancelled:
    """orders.cancelled: Credit releases the hold; Payment refunds a payment that got
    through anyway."""
    return new_event(
        events_pb2.OrderCancelled,
        order_id=order.order_id,
        customer_id=order.customer_id,
        reservation_id=order.reservation_id,
        reason=order.failure_reason,
    )
