"""Background recovery: settle what a crash left PENDING, and refund the payments that won a
race with their order's cancel (compensation.py)."""

from __future__ import annotations

import asyncio
import logging

from services.common.grpc_client import DEFAULT_CALL_TIMEOUT
from services.payment.adapters.proto_mapping import refund_requested
from services.payment.domain.eligibility import CANCELLED_ORDER_STATUS
from services.payment.domain.model import Payment, Refund
from services.payment.service_layer import compensation
from services.payment.service_layer.dependencies import Dependencies
from services.payment.service_layer.errors import GatewayDown
from services.payment.service_layer.processing import settle_payment
from services.payment.service_layer.refunds import settle_refund

log = logging.getLogger(__name__)


async def settle_stale(deps: Dependencies, batch: int = 100) -> int:
    """Settle payments and refunds a crash left PENDING. Returns how many it settled (a
    refund whose gateway is still down is not counted: the caller must not spin on it)."""
    async with deps.unit_of_work() as uow:
        payments = await uow.payments.stale_pending(deps.stale_after_seconds, batch)
        refunds = await uow.refunds.stale_pending(deps.stale_after_seconds, batch)
    # Several at a time (a slow gateway must not make recovery take batch x timeout), within
    # a bound (the gateway, the pool).
    bound = asyncio.Semaphore(deps.recovery_concurrency)

    async def settle_one_payment(payment: Payment) -> bool:
        async with bound:
            try:
                settled = await settle_payment(deps, payment)
            except GatewayDown:  # outcome still unknown: PENDING for the next round
                log.warning("payment %s still cannot reach the gateway", payment.payment_id)
                return False
        log.info("recovered payment %s: %s", settled.payment_id, settled.status.value)
        return True

    async def settle_one_refund(refund: Refund) -> bool:
        async with bound:
            try:
                settled, _ = await settle_refund(deps, refund)
            except GatewayDown:
                log.warning("refund %s still cannot reach the gateway", refund.refund_id)
                return False
        log.info("recovered refund %s: %s", settled.refund_id, settled.status.value)
        return True

    done = await asyncio.gather(*(settle_one_payment(p) for p in payments))
    done += await asyncio.gather(*(settle_one_refund(r) for r in refunds))
    return sum(done)


async def compensate_cancelled_orders(deps: Dependencies, batch: int = 100) -> int:
    """Refund the successful payments of orders that Order confirms were cancelled (see
    compensation.py). Returns how many noted orders it resolved."""
    async with deps.unit_of_work() as uow:
        await uow.cancelled_orders.resolve_nothing_charged(
            compensation.NOTHING_CHARGED_AFTER_SECONDS
        )
        order_ids = await uow.cancelled_orders.to_check(batch)
    resolved = 0
    for order_id in order_ids:
        order = await deps.orders.get_order(order_id, DEFAULT_CALL_TIMEOUT)
        cancelled = order is not None and order.status == CANCELLED_ORDER_STATUS
        refund: Refund | None = None
        async with deps.unit_of_work() as uow:
            if cancelled:
                recorded = await compensation.record_refund(uow, order_id)
                if recorded is not None:
                    refund, payment = recorded
                    uow.emit(refund_requested(refund, payment))
                outcome = "REFUNDED"
            else:
                # A late or forged orders.cancelled: Order says the order stands.
                log.error(
                    "orders.cancelled was seen for order %s, but Order says it is %s;"
                    " its payment is not refunded",
                    order_id,
                    order.status if order else "unknown",
                    extra={"order_id": order_id},
                )
                outcome = "NOT_CANCELLED"
            await uow.cancelled_orders.resolve(order_id, outcome)
        resolved += 1
        if refund is not None:
            try:
                await settle_refund(deps, refund)
            except GatewayDown:
                log.warning("refund %s waits for the gateway", refund.refund_id)
    return resolved
