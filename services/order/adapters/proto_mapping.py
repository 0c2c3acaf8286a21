"""Orders as protobuf messages: the gRPC resource and the items carried by orders.created."""

from __future__ import annotations

from collections.abc import Sequence

from services.common.proto_mapping import money_to_proto, timestamp
from services.order.adapters.repository import StoredOrder
from services.order.domain.model import LineItem
from shop.order.v1 import order_pb2


def items_to_proto(items: Sequence[LineItem]) -> list[order_pb2.OrderItem]:
    return [
        order_pb2.OrderItem(
            sku=item.sku, quantity=item.quantity, unit_price=money_to_proto(item.unit_price)
        )
        for item in items
    ]


def order_to_proto(stored: StoredOrder) -> order_pb2.Order:
    o = stored.order
    return order_pb2.Order(
        order_id=o.order_id,
        customer_id=o.customer_id,
        items=items_to_proto(o.items),
        total=money_to_proto(o.total),
        status=order_pb2.OrderStatus.Value(f"ORDER_STATUS_{o.status.value}"),
        reservation_id=o.reservation_id,
        payment_id=o.payment_id,
        failure_reason=o.failure_reason,
        created_at=timestamp(stored.created_at),
        updated_at=timestamp(stored.updated_at),
    )
