"""Order use cases: plain functions over a unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from services.common.errors import OrderNotFound, found
from services.common.paging import Fetched, PageCursor
from services.order.adapters.proto_mapping import order_cancelled, order_created
from services.order.domain.model import LineItem, Order
from services.order.service_layer.ports import OrderUnitOfWork


async def create_order(uow: OrderUnitOfWork, customer_id: str, items: Sequence[LineItem]) -> Order:
    """A PENDING order and its orders.created, in one transaction; no other service is
    called, so ordering works while Credit or Payment is down."""
    order = await uow.orders.add(Order.create(str(uuid.uuid4()), customer_id, items))
    uow.emit(order_created(order))
    return order


async def get_order(uow: OrderUnitOfWork, order_id: str) -> Order:
    return found(await uow.orders.get(order_id), OrderNotFound(order_id))


async def list_orders(
    uow: OrderUnitOfWork, customer_id: str, after: PageCursor | None, limit: int
) -> Fetched[Order]:
    return await uow.orders.list_for_customer(customer_id, after, limit)


async def cancel_order(uow: OrderUnitOfWork, order_id: str, reason: str) -> Order:
    """PENDING/RESERVED → CANCELLED with orders.cancelled (Credit releases the hold).

    The row lock orders this against a saga event for the same order: either the event
    applies first and the cancel sees its outcome, or the cancel wins and the event is late."""
    orders = uow.orders
    order = found(await orders.get(order_id, for_update=True), OrderNotFound(order_id))
    if not order.cancel(reason):
        return order  # already cancelled: same answer, no second event
    saved = await orders.save(order)
    uow.emit(order_cancelled(order))
    return saved
