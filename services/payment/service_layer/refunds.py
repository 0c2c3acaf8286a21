"""RefundPayment: partial and full refunds, each recorded once under the payment's row lock
and settled at the gateway outside any transaction."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from services.common.errors import IdempotencyKeyReused
from services.common.money import Money
from services.payment.adapters.proto_mapping import payment_refunded, refund_requested
from services.payment.domain.gateway import GatewayUnavailable, PaymentGateway
from services.payment.domain.model import Payment, Refund, RefundOutcome, RefundStatus
from services.payment.service_layer.dependencies import Dependencies, RetryPolicy
from services.payment.service_layer.errors import GatewayDown, PaymentNotFound
from services.payment.service_layer.ports import PaymentUnitOfWork, RequestIdTaken

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RefundPayment:
    payment_id: str
    amount: Money | None  # None: everything not yet refunded
    reason: str
    request_id: str
    fingerprint: bytes  # of the whole request, to refuse a reused request_id


async def refund_payment(deps: Dependencies, cmd: RefundPayment) -> tuple[Refund, Payment]:
    """Record the refund under the payment's row lock, refund at the gateway, then record the
    money as given back (payment.refunded, status, PaymentRefunded) in one transaction."""
    refund: Refund | None = None
    payment: Payment | None = None
    for attempt in range(2):
        try:
            refund, payment = await _record_refund(deps, cmd)
            break
        except RequestIdTaken:
            # A concurrent call with this request_id recorded first: go and find it.
            if attempt == 0:
                continue
            raise
    assert refund is not None
    assert payment is not None
    if refund.status is RefundStatus.PENDING:
        return await settle_refund(deps, refund)
    return refund, payment


async def _record_refund(deps: Dependencies, cmd: RefundPayment) -> tuple[Refund, Payment]:
    async with deps.unit_of_work() as uow:
        payments, refunds = uow.payments, uow.refunds
        if (earlier := await _earlier_refund(uow, cmd)) is not None:
            return earlier  # the common retry: answered without taking the payment's lock
        # The row lock serializes refunds of one payment: each one sees what the others took.
        payment = await payments.get(cmd.payment_id, for_update=True)
        if payment is None:
            raise PaymentNotFound(cmd.payment_id)
        # Again under the lock: an identical call that was waiting for it while this one
        # looked may have recorded the refund meanwhile; its answer is this call's answer
        # (without this, a full refund's twin would be refused REFUND_EXCEEDS_PAYMENT).
        if (earlier := await _earlier_refund(uow, cmd)) is not None:
            return earlier
        amount = payment.plan_refund(cmd.amount, await refunds.pending_total(cmd.payment_id))
        refund = await refunds.add(
            Refund(
                refund_id=str(uuid.uuid4()),
                payment_id=payment.payment_id,
                amount=amount,
                reason=cmd.reason,
                request_id=cmd.request_id,
            ),
            cmd.fingerprint,
        )
        uow.emit(refund_requested(refund, payment))
        return refund, payment


async def _earlier_refund(
    uow: PaymentUnitOfWork, cmd: RefundPayment
) -> tuple[Refund, Payment] | None:
    """The refund an earlier call with this request_id recorded, with its payment."""
    found = await uow.refunds.by_request_id(cmd.request_id)
    if found is None:
        return None
    refund, fingerprint = found
    if fingerprint != cmd.fingerprint:
        raise IdempotencyKeyReused(cmd.request_id)
    payment = await uow.payments.get(refund.payment_id)
    assert payment is not None
    return refund, payment


async def settle_refund(deps: Dependencies, refund: Refund) -> tuple[Refund, Payment]:
    outcome = await refund_with_retries(
        deps.gateway, refund, deps.retry, deps.gateway_timeout_seconds
    )
    refund.settle(outcome)
    async with deps.unit_of_work() as uow:
        payments, refunds = uow.payments, uow.refunds
        # Payment row first, as when a refund is recorded: one lock order everywhere.
        payment = await payments.get(refund.payment_id, for_update=True)
        assert payment is not None
        recorded = await refunds.record_settlement(refund)
        if recorded is None:  # settled meanwhile by a retry or the recovery job
            current = await refunds.get(refund.refund_id)
            assert current is not None
            return current, payment
        if recorded.status is RefundStatus.SUCCEEDED:
            payment.apply_refund(recorded.amount)
            payment = await payments.record_refunded(payment)
            uow.emit(payment_refunded(recorded, payment))
    return recorded, payment


async def refund_with_retries(
    gateway: PaymentGateway, refund: Refund, policy: RetryPolicy, call_seconds: float = 10.0
) -> RefundOutcome:
    """Unlike a charge, a refund the processor could not take stays PENDING (the money is
    owed): the caller gets UNAVAILABLE, and a retry or the recovery job completes it."""
    delays = policy.delays()
    for attempt in range(policy.attempts):
        try:
            async with asyncio.timeout(
                call_seconds
            ):  # a timeout: an outage, the refund stays PENDING
                return await gateway.refund(refund.refund_id, refund.payment_id, refund.amount)
        except (GatewayUnavailable, TimeoutError) as error:
            log.warning("gateway unavailable for refund %s: %r", refund.refund_id, error)
            if attempt < len(delays):
                await policy.sleep(delays[attempt])
    raise GatewayDown("refund")
