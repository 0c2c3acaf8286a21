"""Order's event-driven entry points: the durable consumers of credit and payment outcomes."""

from __future__ import annotations

import operator
from collections.abc import Callable

from services.common.inbox import Consumer
from services.common.jetstream import Messaging
from services.order.adapters.unit_of_work import SqlOrderUnitOfWork
from services.order.service_layer import saga
from shop.credit.v1 import events_pb2 as credit_events
from shop.payment.v1 import events_pb2 as payment_events

# Every handler locks the event's order row: batches lock orders in id order, so
# order-credits and order-payments never deadlock on two orders.
LOCK_ORDER = operator.attrgetter("order_id")


def consumers(
    unit_of_work: Callable[[], SqlOrderUnitOfWork], messaging: Messaging
) -> list[Consumer]:
    return [
        Consumer(
            "order-credits",
            "CREDITS",
            {
                credit_events.CreditsReserved: saga.on_credits_reserved,
                credit_events.CreditReservationFailed: saga.on_reservation_failed,
                credit_events.CreditsReleased: saga.on_credits_released,
            },
            unit_of_work,
            messaging,
            lock_order=LOCK_ORDER,
        ),
        Consumer(
            "order-payments",
            "PAYMENTS",
            {
                payment_events.PaymentSucceeded: saga.on_payment_succeeded,
                payment_events.PaymentFailed: saga.on_payment_failed,
                payment_events.PaymentRefunded: saga.on_payment_refunded,
            },
            unit_of_work,
            messaging,
            lock_order=LOCK_ORDER,
        ),
    ]
