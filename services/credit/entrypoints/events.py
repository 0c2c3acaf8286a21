"""Credit's event-driven entry points: the durable consumers and the expiry sweeper."""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Callable

from services.common.inbox import Consumer
from services.common.jetstream import Messaging
from services.credit.adapters.unit_of_work import SqlCreditUnitOfWork
from services.credit.service_layer import saga
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events

log = logging.getLogger(__name__)


# Every handler locks the customer's account first, then the order's hold (saga.py): batches
# take accounts in customer order, so credit-orders, credit-payments and the sweeper never
# deadlock, on two accounts or on an account and a hold.
LOCK_ORDER = operator.attrgetter("customer_id")


def consumers(
    unit_of_work: Callable[[], SqlCreditUnitOfWork], messaging: Messaging, ttl_seconds: int
) -> list[Consumer]:
    async def on_order_created(uow: SqlCreditUnitOfWork, event: order_events.OrderCreated) -> None:
        await saga.reserve_for_order(uow, event, ttl_seconds)

    return [
        Consumer(
            "credit-orders",
            "ORDERS",
            {
                order_events.OrderCreated: on_order_created,
                order_events.OrderCancelled: saga.release_for_cancelled_order,
            },
            unit_of_work,
            messaging,
            lock_order=LOCK_ORDER,
        ),
        Consumer(
            "credit-payments",
            "PAYMENTS",
            {
                payment_events.PaymentSucceeded: saga.capture_for_payment,
                payment_events.PaymentFailed: saga.release_for_failed_payment,
                payment_events.PaymentRefunded: saga.refund,
            },
            unit_of_work,
            messaging,
            lock_order=LOCK_ORDER,
        ),
    ]


class ExpirySweeper:
    """Releases holds past their expiry (reason EXPIRED), a batch per transaction.

    SKIP LOCKED lets several replicas sweep at once without waiting on each other."""

    def __init__(
        self,
        unit_of_work: Callable[[], SqlCreditUnitOfWork],
        interval_seconds: float,
        batch: int = 100,
    ) -> None:
        self.unit_of_work = unit_of_work
        self.interval_seconds = interval_seconds
        self.batch = batch

    async def sweep_once(self) -> int:
        """Expire one batch; returns how many overdue holds it found."""
        async with self.unit_of_work() as uow:
            overdue = await uow.reservations.overdue(self.batch)
            # accounts in the order the consumers' batches take them, each before its hold
            for hold in sorted(overdue, key=LOCK_ORDER):
                await saga.expire(uow, hold)
        return len(overdue)

    async def run(self) -> None:
        while True:
            try:
                while await self.sweep_once() == self.batch:
                    pass  # a full batch: there may be more right away
            except asyncio.CancelledError:
                raise
            except Exception as error:  # database away: try again next round
                log.warning("expiry sweep failed (%s); retrying", error)
            await asyncio.sleep(self.interval_seconds)
