"""Payment's unit of work on PostgreSQL: the core's transaction with Payment's repositories."""

from __future__ import annotations

from google.protobuf.message import Message

from services.common.uow import UnitOfWork
from services.payment.adapters.repository import (
    CancelledOrderRepository,
    PaymentRepository,
    RefundRepository,
)


class SqlPaymentUnitOfWork(UnitOfWork):
    @property
    def payments(self) -> PaymentRepository:
        return PaymentRepository(self.conn)

    def payments_with_events(self, *events: Message) -> PaymentRepository:
        """Payments whose one-statement writes carry `events` (autocommit; `with_events`)."""
        return PaymentRepository(self.with_events(*events))

    @property
    def refunds(self) -> RefundRepository:
        return RefundRepository(self.conn)

    @property
    def cancelled_orders(self) -> CancelledOrderRepository:
        return CancelledOrderRepository(self.conn)
