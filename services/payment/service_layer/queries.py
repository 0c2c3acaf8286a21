"""Reads of payments: GetPayment and ListPayments."""

from __future__ import annotations

from services.common.paging import PageCursor
from services.payment.adapters.unit_of_work import SqlPaymentUnitOfWork
from services.payment.domain.model import Payment
from services.payment.service_layer.errors import PaymentNotFound


async def get_payment(uow: SqlPaymentUnitOfWork, payment_id: str) -> Payment:
    payment = await uow.payments.get(payment_id)
    if payment is None:
        raise PaymentNotFound(payment_id)
    return payment


async def list_payments(
    uow: SqlPaymentUnitOfWork,
    order_id: str | None,
    customer_id: str | None,
    after: PageCursor | None,
    limit: int,
) -> list[Payment]:
    return await uow.payments.page(order_id, customer_id, after, limit)
