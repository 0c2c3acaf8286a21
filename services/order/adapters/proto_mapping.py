"""Orders as protobuf messages: the gRPC resource and the events Order publishes."""

from __future__ import annotations

from collections.abc import Sequence

from services.common.events import new_event
from services.common.proto_mapping import money_to_proto, timestamp
from services.order.domain.model import LineItem, Order
from shop.order.v1 import events_pb2, order_pb2


def items_to_proto(items: Sequence[LineItem]) -> list[order_pb2.OrderItem]:
    return [
        order_pb2.OrderItem(
            sku=item.sku, quantity=item.quantity, unit_price=money_to_proto(item.unit_price)
        )
        for item in items
    ]


def order_to_proto(o: Order) -> order_pb2.Order:
    return order_pb2.Order(
        order_id=o.order_id,
        customer_id=o.customer_id,
        items=items_to_proto(o.items),
        total=money_to_proto(o.total),
        status=order_pb2.OrderStatus.Value(f"ORDER_STATUS_{o.status.value}"),
        reservation_id=o.reservation_id,
        payment_id=o.payment_id,
        failure_reason=o.failure_reason,
        created_at=timestamp(o.created_at),
        updated_at=timestamp(o.updated_at),
    )


def order_created(order: Order) -> events_pb2.OrderCreated:
    """orders.created: Credit reserves the total."""
    return new_event(
        events_pb2.OrderCreated,
        order_id=order.order_id,
        customer_id=order.customer_id,
        items=items_to_proto(order.items),
        total=money_to_proto(order.total),
    )


def order_cancelled(order: Order) -> events_pb2.OrderCancelled:
    """orders.cancelled: Credit releases the hold; Payment refunds a payment that got
    through anyway."""
    return new_event(
        events_pb2.OrderCancelled,
        order_id=order.order_id,
        customer_id=order.customer_id,
        reservation_id=order.reservation_id,
        reason=order.failure_reason,
    )
