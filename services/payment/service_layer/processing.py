"""ProcessPayment, DESIGN §3 step by step: one payment per order, charged once.

The gateway is always called outside any transaction: a slow processor must not hold a
database connection or a row lock.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from services.common.errors import OrderNotFound
from services.common.grpc_client import Deadline
from services.common.money import Money
from services.payment.adapters.proto_mapping import (
    payment_failed,
    payment_requested,
    payment_succeeded,
)
from services.payment.domain.eligibility import (
    HoldSnapshot,
    OrderNotOwned,
    OrderNotPayable,
    OrderSnapshot,
    ReservationNotActive,
    ReservationNotFound,
    check_hold,
    check_order,
)
from services.payment.domain.gateway import GatewayUnavailable, PaymentGateway
from services.payment.domain.model import ChargeOutcome, Payment, PaymentMethod, PaymentStatus
from services.payment.service_layer.dependencies import Dependencies, RetryPolicy
from services.payment.service_layer.errors import GatewayDown, PaymentInProgress

log = logging.getLogger(__name__)

PROCESSING_ERROR = "PROCESSING_ERROR"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ProcessPayment:
    order_id: str
    customer_id: str
    reservation_id: str  # "" when the caller gave none
    amount: Money
    method: PaymentMethod


@dataclass(frozen=True, slots=True)
class Reads:
    """What ProcessPayment reads before its first write, each answer or the error it raised:
    read all at once, judged one by one in the contract's order (`pay`)."""

    existing: Payment | BaseException | None  # step 2: the order's payment, if any
    order: OrderSnapshot | BaseException | None  # step 3: the order, as Order sees it now
    hold: HoldSnapshot | BaseException | None  # step 4: the named hold (None if none named)


async def read_ahead(deps: Dependencies, cmd: ProcessPayment, deadline: Deadline) -> Reads:
    """Steps 2 to 4's reads at once: the order's payment here, the order from Order and the
    hold from Credit. None of them has an effect, so they may also run beside the request-id
    claim (RequestLedger.run): a payment takes the longest of them, not their sum."""
    hold_call = (
        deps.holds.get_reservation(cmd.reservation_id, deadline.call_timeout())
        if cmd.reservation_id
        else _no_hold()
    )
    existing, order, hold = await asyncio.gather(
        _payment_for_order(deps, cmd.order_id),
        deps.orders.get_order(cmd.order_id, deadline.call_timeout()),
        hold_call,
        return_exceptions=True,
    )
    return Reads(existing, order, hold)


async def _no_hold() -> HoldSnapshot | None:
    """The hold of a payment that names none: the order's own is taken later (step 4)."""
    return None


async def process_payment(deps: Dependencies, cmd: ProcessPayment, deadline: Deadline) -> Payment:
    """Charge the order once; return its payment (FAILED for a decline: a business outcome)."""
    return await pay(deps, cmd, deadline, await read_ahead(deps, cmd, deadline))


async def pay(deps: Dependencies, cmd: ProcessPayment, deadline: Deadline, reads: Reads) -> Payment:
    """`process_payment` with its reads done: judge them in the contract's order (the same
    request gets the same error), then record and charge."""
    # Step 2: one payment per order; a repeat returns it without a second charge.
    existing = _answer(reads.existing)
    if existing is not None:
        return await _outcome_of(deps, existing, cmd.customer_id, deadline)

    # Step 3: the order, as Order sees it now.
    order = _answer(reads.order)
    if order is None:
        raise OrderNotFound(cmd.order_id)
    reservation_id = cmd.reservation_id
    try:
        check_order(order, cmd.customer_id, cmd.amount)

        # Step 4: the hold, when the caller names one; otherwise the order's own.
        if reservation_id:
            hold = _answer(reads.hold)
            if hold is None:
                raise ReservationNotFound(reservation_id)
            check_hold(hold, cmd.customer_id, cmd.order_id, deps.clock())
        else:
            reservation_id = _uuid_or_empty(order.reservation_id)
    except (OrderNotPayable, ReservationNotActive):
        # A concurrent call may have charged the order since step 2 looked, and Order or
        # Credit applied it (PAID, CAPTURED): then that payment is the answer, as in step 2.
        if (winner := await _existing_outcome(deps, cmd, deadline)) is None:
            raise
        return winner

    # Step 5: PENDING + PaymentRequested, or find that a concurrent call won the order.
    pending = Payment(
        payment_id=str(uuid.uuid4()),
        order_id=cmd.order_id,
        customer_id=cmd.customer_id,
        reservation_id=reservation_id,
        amount=cmd.amount,
        method=cmd.method,
    )
    # One statement, its event in it (no BEGIN/COMMIT); a conflict writes neither.
    async with deps.unit_of_work().autocommit() as uow:
        recorded = await uow.payments_with_events(payment_requested(pending)).add(pending)
    if recorded is None:
        winner = await _payment_for_order(deps, cmd.order_id)
        assert winner is not None, "the conflicting payment is committed"
        return await _outcome_of(deps, winner, cmd.customer_id, deadline)

    # Steps 6 and 7.
    return await settle_payment(deps, recorded)


async def settle_payment(deps: Dependencies, payment: Payment) -> Payment:
    """Charge a PENDING payment and record the outcome with its event, once."""
    outcome = await charge_with_retries(
        deps.gateway, payment, deps.retry, deps.gateway_timeout_seconds
    )
    payment.settle(outcome, at=deps.clock())
    event = payment_succeeded(payment) if payment.is_charged else payment_failed(payment)
    # One statement, its event in it (no BEGIN/COMMIT); a payment settled meanwhile
    # (recovery, or a duplicate that found it stale) matches nothing and writes no event.
    async with deps.unit_of_work().autocommit() as uow:
        recorded = await uow.payments_with_events(event).record_settlement(payment)
    if recorded is None:
        async with deps.unit_of_work().autocommit() as uow:
            current = await uow.payments.get(payment.payment_id)
        assert current is not None
        return current
    log.info(
        "payment %s for order %s %s",
        recorded.payment_id,
        recorded.order_id,
        recorded.status.value,
        extra={"payment_id": recorded.payment_id, "error_code": recorded.error_code},
    )
    return recorded


async def charge_with_retries(
    gateway: PaymentGateway, payment: Payment, policy: RetryPolicy, call_seconds: float = 10.0
) -> ChargeOutcome:
    """Retry a processor that is unavailable; if it stays so, the payment fails with
    PROCESSING_ERROR (DESIGN §3) rather than hanging PENDING. A call that times out may
    have charged: retried too (idempotent by payment id), and if no attempt answers, the
    outcome is unknown: GatewayDown, the payment stays PENDING and recovery charges it
    again later, as after a crash. The processor's words are logged, never recorded."""
    delays = policy.delays()
    last: GatewayUnavailable | None = None
    timed_out = False
    for attempt in range(policy.attempts):
        try:
            async with asyncio.timeout(call_seconds):
                return await gateway.charge(payment.payment_id, payment.amount, payment.method)
        except GatewayUnavailable as error:
            last = error
            log.warning(
                "gateway unavailable for payment %s (attempt %d of %d): %s",
                payment.payment_id,
                attempt + 1,
                policy.attempts,
                error,
            )
        except TimeoutError:
            timed_out = True
            log.warning(
                "gateway did not answer within %.1fs for payment %s (attempt %d of %d)",
                call_seconds,
                payment.payment_id,
                attempt + 1,
                policy.attempts,
            )
        if attempt < len(delays):
            await policy.sleep(delays[attempt])
    if timed_out or last is None:
        raise GatewayDown("payment")
    return ChargeOutcome(
        succeeded=False,
        error_code=PROCESSING_ERROR,
        error_message="The payment processor is unavailable",
        failure_reason=f"The payment gateway was unavailable after {policy.attempts} attempts",
        is_simulated=last.is_simulated,
        simulated_response=last.response,
    )


async def _payment_for_order(deps: Dependencies, order_id: str) -> Payment | None:
    async with deps.unit_of_work().autocommit() as uow:
        return await uow.payments.for_order(order_id)


async def _existing_outcome(
    deps: Dependencies, cmd: ProcessPayment, deadline: Deadline
) -> Payment | None:
    """The outcome of the order's payment, if it has one (one payment per order)."""
    existing = await _payment_for_order(deps, cmd.order_id)
    if existing is None:
        return None
    return await _outcome_of(deps, existing, cmd.customer_id, deadline)


async def _outcome_of(
    deps: Dependencies, payment: Payment, customer_id: str, deadline: Deadline
) -> Payment:
    if payment.customer_id != customer_id:
        raise OrderNotOwned(payment.order_id)
    return await wait_for_outcome(deps, payment, deadline)


async def wait_for_outcome(deps: Dependencies, payment: Payment, deadline: Deadline) -> Payment:
    """A payment another call is charging: poll until it settles, within our deadline. One
    left PENDING by a crash (older than stale_after_seconds) we settle ourselves."""
    loop = asyncio.get_running_loop()
    remaining = deadline.remaining()
    budget = deps.poll.max_wait if remaining is None else remaining - 0.05
    give_up_at = loop.time() + budget
    interval = deps.poll.initial_interval
    while payment.status is PaymentStatus.PENDING:
        if _is_stale(deps, payment):
            return await settle_payment(deps, payment)
        if loop.time() + interval >= give_up_at:
            raise PaymentInProgress(payment)
        await asyncio.sleep(interval)
        interval = min(interval * 2, deps.poll.max_interval)
        async with deps.unit_of_work().autocommit() as uow:
            current = await uow.payments.get(payment.payment_id)
        assert current is not None
        payment = current
    return payment


def _is_stale(deps: Dependencies, payment: Payment) -> bool:
    return payment.created_at is not None and deps.clock() - payment.created_at > timedelta(
        seconds=deps.stale_after_seconds
    )


def _answer(answer: T | BaseException) -> T:
    """A read's answer, or the error it raised, raised now: in the order the reads are judged."""
    if isinstance(answer, BaseException):
        raise answer
    return answer


def _uuid_or_empty(value: str) -> str:
    try:
        return str(uuid.UUID(value)) if value else ""
    except ValueError:
        return ""  # not ours to trust blindly; the payment simply names no hold
