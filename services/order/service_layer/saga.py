"""Order's part of the saga: following credit and payment outcomes.

Each handler runs in the unit of work that also records the event in the inbox, so it
applies once. A late, repeated or out-of-order event is logged and ignored (raising would
redeliver it forever); only transient failures raise. Order emits nothing here (the
outcomes were already announced by the services that produced them) but `orders.cancelled`
when a hold's expiry cancels the order, so that every cancellation is announced alike.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from services.order.adapters.proto_mapping import order_cancelled
from services.order.domain.model import Order
from services.order.service_layer.ports import OrderUnitOfWork
from shop.credit.v1 import events_pb2 as credit_events
from shop.payment.v1 import events_pb2 as payment_events

log = logging.getLogger(__name__)

EXPIRED = "EXPIRED"


async def _apply(
    uow: OrderUnitOfWork, order_id: str, event_name: str, change: Callable[[Order], bool]
) -> Order | None:
    """Lock the order, apply `change`, save it if it moved. None if nothing changed."""
    try:
        uuid.UUID(order_id)
    except ValueError:
        log.error("%s names no valid order id (%r); ignored", event_name, order_id[:64])
        return None
    orders = uow.orders
    order = await orders.get(order_id, for_update=True)
    if order is None:
        log.warning("%s for unknown order %s; ignored", event_name, order_id)
        return None
    before = order.status
    if not change(order):
        log.warning(
            "%s for order %s ignored: illegal from %s (late or out of order)",
            event_name,
            order_id,
            before.value,
            extra={"order_id": order_id, "status": before.value},
        )
        return None
    await orders.save(order)
    log.info(
        "order %s %s → %s on %s",
        order_id,
        before.value,
        order.status.value,
        event_name,
        extra={"order_id": order_id, "status": order.status.value},
    )
    return order


async def on_credits_reserved(uow: OrderUnitOfWork, event: credit_events.CreditsReserved) -> None:
    await _apply(
        uow,
        event.order_id,
        "credits.reserved",
        lambda order: order.credits_reserved(event.reservation_id),
    )


async def on_reservation_failed(
    uow: OrderUnitOfWork, event: credit_events.CreditReservationFailed
) -> None:
    await _apply(
        uow,
        event.order_id,
        "credits.reservation_failed",
        lambda order: order.reservation_failed(event.reason or "RESERVATION_FAILED"),
    )


async def on_credits_released(uow: OrderUnitOfWork, event: credit_events.CreditsReleased) -> None:
    if event.reason != EXPIRED:
        # Released after a cancel or a failed payment: the order already knows.
        log.debug("credits.released (%s) for order %s: nothing to do", event.reason, event.order_id)
        return
    order = await _apply(
        uow,
        event.order_id,
        "credits.released(EXPIRED)",
        lambda order: order.reservation_expired(event.reservation_id),
    )
    if order is not None:
        # Announced like any cancellation: Payment refunds a payment that got through anyway.
        uow.emit(order_cancelled(order))


async def on_payment_succeeded(
    uow: OrderUnitOfWork, event: payment_events.PaymentSucceeded
) -> None:
    order = await _apply(
        uow,
        event.order_id,
        "payments.succeeded",
        lambda order: order.payment_succeeded(event.payment_id),
    )
    if order is None:
        # Money moved but the order could not follow (it was cancelled or expired in the
        # meantime). Payment refunds it on the orders.cancelled we announced.
        log.warning(
            "payment %s succeeded but order %s did not become PAID; Payment refunds it",
            event.payment_id,
            event.order_id,
            extra={"order_id": event.order_id, "payment_id": event.payment_id},
        )


async def on_payment_failed(uow: OrderUnitOfWork, event: payment_events.PaymentFailed) -> None:
    await _apply(
        uow,
        event.order_id,
        "payments.failed",
        lambda order: order.payment_failed(event.payment_id, event.error_code or "PAYMENT_FAILED"),
    )


async def on_payment_refunded(uow: OrderUnitOfWork, event: payment_events.PaymentRefunded) -> None:
    if not event.fully_refunded:
        # A partial refund leaves the order PAID; the payment carries refunded_amount.
        log.info(
            "partial refund %s of order %s; order stays as is", event.refund_id, event.order_id
        )
        return
    await _apply(
        uow,
        event.order_id,
        "payments.refunded",
        lambda order: order.fully_refunded(event.payment_id),
    )
