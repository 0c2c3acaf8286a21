"""Payment's event-driven entry point: it follows cancellations, to refund a payment that
won a race with its order's cancel (service_layer/compensation.py)."""

from __future__ import annotations

from collections.abc import Callable

from services.common.inbox import Consumer
from services.common.jetstream import Messaging
from services.payment.adapters.unit_of_work import SqlPaymentUnitOfWork
from services.payment.service_layer import compensation
from shop.order.v1 import events_pb2 as order_events


def consumers(
    unit_of_work: Callable[[], SqlPaymentUnitOfWork], messaging: Messaging
) -> list[Consumer]:
    return [
        Consumer(
            "payment-orders",
            "ORDERS",
            {order_events.OrderCancelled: compensation.note_cancelled_order},
            unit_of_work,
            messaging,
        ),
    ]
