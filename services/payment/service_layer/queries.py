"""Reads of payments: GetPayment and ListPayments."""

from __future__ import annotations

from services.common.errors import found
from services.common.paging import PageCursor
from services.payment.domain.model import Payment
from services.payment.service_layer.errors import PaymentNotFound
from services.payment.service_layer.ports import PaymentUnitOfWork


async def get_payment(uow: PaymentUnitOfWork, payment_id: str) -> Payment:
    return found(await uow.payments.get(payment_id), PaymentNotFound(payment_id))


async def list_payments(
    uow: PaymentUnitOfWork,
    order_id: str | None,
    customer_id: str | None,
    after: PageCursor | None,
    limit: int,
) -> list[Payment]:
    return await uow.payments.page(order_id, customer_id, after, limit)
