"""Payment use cases: plain functions over ports (unit of work, gateway, Order, Credit).

ProcessPayment follows DESIGN §3 step by step. The gateway is always called outside any
transaction: a slow processor must not hold a database connection or a row lock.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from services.common.errors import IdempotencyKeyReused, NotFound, OrderNotFound, Unavailable
from services.common.events import new_event
from services.common.grpc_client import DEFAULT_CALL_TIMEOUT, Deadline
from services.common.money import Money
from services.common.paging import PageCursor
from services.common.proto_mapping import amount_to_proto, money_to_proto, timestamp
from services.common.uow import UnitOfWork
from services.payment.adapters.proto_mapping import method_to_proto
from services.payment.adapters.repository import PaymentRepository, RefundRepository
from services.payment.domain.eligibility import (
    CANCELLED_ORDER_STATUS,
    OrderNotOwned,
    OrderNotPayable,
    ReservationNotActive,
    ReservationNotFound,
    check_hold,
    check_order,
)
from services.payment.domain.gateway import GatewayUnavailable, PaymentGateway
from services.payment.domain.model import (
    ChargeOutcome,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
    RefundOutcome,
    RefundStatus,
)
from services.payment.service_layer import compensation
from services.payment.service_layer.ports import Holds, Orders
from shop.payment.v1 import events_pb2

log = logging.getLogger(__name__)

PROCESSING_ERROR = "PROCESSING_ERROR"


class PaymentNotFound(NotFound):
    def __init__(self, payment_id: str) -> None:
        super().__init__(
            f"payment {payment_id} does not exist", "PAYMENT_NOT_FOUND", {"payment_id": payment_id}
        )


class PaymentInProgress(Unavailable):
    """Another call is charging this order and did not finish within our deadline."""

    def __init__(self, payment: Payment) -> None:
        super().__init__(
            f"payment {payment.payment_id} for order {payment.order_id} is still being"
            " processed; retry to get its outcome",
            "PAYMENT_IN_PROGRESS",
            {"payment_id": payment.payment_id, "order_id": payment.order_id},
        )


class GatewayDown(Unavailable):
    def __init__(self, what: str) -> None:
        super().__init__(
            f"the payment gateway is unavailable; the {what} will be completed, retry to see it",
            "GATEWAY_UNAVAILABLE",
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient gateway failures."""

    attempts: int = 3
    initial_delay: float = 0.1
    multiplier: float = 2.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def delays(self) -> list[float]:
        """The pauses between attempts (one fewer than the attempts)."""
        return [self.initial_delay * self.multiplier**n for n in range(self.attempts - 1)]


@dataclass(frozen=True)
class PollPolicy:
    """How a duplicate waits for the payment another call is charging."""

    initial_interval: float = 0.02
    max_interval: float = 0.25
    max_wait: float = 30.0  # when the caller set no deadline


@dataclass
class Dependencies:
    unit_of_work: Callable[[], UnitOfWork]
    gateway: PaymentGateway
    orders: Orders
    holds: Holds
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll: PollPolicy = field(default_factory=PollPolicy)
    # A PENDING row older than this is presumed orphaned by a crash; whoever sees it may
    # settle it (the gateway is idempotent by payment id; the conditional update keeps one
    # outcome and one event).
    stale_after_seconds: float = 10.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # One gateway call's bound (PAYMENT_GATEWAY_TIMEOUT_SECONDS): a charge that times out
    # has an unknown outcome and stays PENDING for recovery (it may have been taken).
    gateway_timeout_seconds: float = 10.0
    recovery_concurrency: int = 8  # payments (and refunds) recovery settles at once


@dataclass(frozen=True, slots=True)
class ProcessPayment:
    order_id: str
    customer_id: str
    reservation_id: str  # "" when the caller gave none
    amount: Money
    method: PaymentMethod


@dataclass(frozen=True, slots=True)
class RefundPayment:
    payment_id: str
    amount: Money | None  # None: everything not yet refunded
    reason: str
    request_id: str
    fingerprint: bytes  # of the whole request, to refuse a reused request_id


# ProcessPayment ─────────────────────────────────────────────────────────────────────────────


async def process_payment(deps: Dependencies, cmd: ProcessPayment, deadline: Deadline) -> Payment:
    """Charge the order once; return its payment (FAILED for a decline: a business outcome)."""
    # Step 2: one payment per order; a repeat returns it without a second charge.
    if (existing := await _existing_outcome(deps, cmd, deadline)) is not None:
        return existing

    # Steps 3 and 4 ask Order and Credit at once (one round trip instead of two); the
    # answers are judged in the contract's order, so the same request gets the same error.
    reservation_id = cmd.reservation_id
    order_call = deps.orders.get_order(cmd.order_id, deadline.call_timeout())
    if reservation_id:
        hold_call = deps.holds.get_reservation(reservation_id, deadline.call_timeout())
        order_answer, hold_answer = await asyncio.gather(
            order_call, hold_call, return_exceptions=True
        )
    else:
        order_answer, hold_answer = await order_call, None

    # Step 3: the order, as Order sees it now.
    if isinstance(order_answer, BaseException):
        raise order_answer
    order = order_answer
    if order is None:
        raise OrderNotFound(cmd.order_id)
    try:
        check_order(order, cmd.customer_id, cmd.amount)

        # Step 4: the hold, when the caller names one; otherwise the order's own.
        if reservation_id:
            if isinstance(hold_answer, BaseException):
                raise hold_answer
            hold = hold_answer
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
        recorded = await PaymentRepository(uow.with_events(_requested(pending))).add(pending)
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
    event = _succeeded(payment) if payment.is_charged else _failed(payment)
    # One statement, its event in it (no BEGIN/COMMIT); a payment settled meanwhile
    # (recovery, or a duplicate that found it stale) matches nothing and writes no event.
    async with deps.unit_of_work().autocommit() as uow:
        recorded = await PaymentRepository(uow.with_events(event)).record_settlement(payment)
    if recorded is None:
        async with deps.unit_of_work().autocommit() as uow:
            current = await PaymentRepository(uow.conn).get(payment.payment_id)
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
        return await PaymentRepository(uow.conn).for_order(order_id)


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
            current = await PaymentRepository(uow.conn).get(payment.payment_id)
        assert current is not None
        payment = current
    return payment


def _is_stale(deps: Dependencies, payment: Payment) -> bool:
    return payment.created_at is not None and deps.clock() - payment.created_at > timedelta(
        seconds=deps.stale_after_seconds
    )


def _uuid_or_empty(value: str) -> str:
    try:
        return str(uuid.UUID(value)) if value else ""
    except ValueError:
        return ""  # not ours to trust blindly; the payment simply names no hold


# Reads ──────────────────────────────────────────────────────────────────────────────────────


async def get_payment(uow: UnitOfWork, payment_id: str) -> Payment:
    payment = await PaymentRepository(uow.conn).get(payment_id)
    if payment is None:
        raise PaymentNotFound(payment_id)
    return payment


async def list_payments(
    uow: UnitOfWork,
    order_id: str | None,
    customer_id: str | None,
    after: PageCursor | None,
    limit: int,
) -> list[Payment]:
    return await PaymentRepository(uow.conn).page(order_id, customer_id, after, limit)


# RefundPayment ──────────────────────────────────────────────────────────────────────────────


async def refund_payment(deps: Dependencies, cmd: RefundPayment) -> tuple[Refund, Payment]:
    """Record the refund under the payment's row lock, refund at the gateway, then record the
    money as given back (payment.refunded, status, PaymentRefunded) in one transaction."""
    refund: Refund | None = None
    payment: Payment | None = None
    for attempt in range(2):
        try:
            refund, payment = await _record_refund(deps, cmd)
            break
        except asyncpg.UniqueViolationError as error:
            # A concurrent call with this request_id recorded first: go and find it.
            if attempt == 0 and error.constraint_name == "refunds_request_id_unique":
                continue
            raise
    assert refund is not None
    assert payment is not None
    if refund.status is RefundStatus.PENDING:
        return await settle_refund(deps, refund)
    return refund, payment


async def _record_refund(deps: Dependencies, cmd: RefundPayment) -> tuple[Refund, Payment]:
    async with deps.unit_of_work() as uow:
        payments, refunds = PaymentRepository(uow.conn), RefundRepository(uow.conn)
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
        uow.emit(_refund_requested(refund, payment))
        return refund, payment


async def _earlier_refund(uow: UnitOfWork, cmd: RefundPayment) -> tuple[Refund, Payment] | None:
    """The refund an earlier call with this request_id recorded, with its payment."""
    found = await RefundRepository(uow.conn).by_request_id(cmd.request_id)
    if found is None:
        return None
    refund, fingerprint = found
    if fingerprint != cmd.fingerprint:
        raise IdempotencyKeyReused(cmd.request_id)
    payment = await PaymentRepository(uow.conn).get(refund.payment_id)
    assert payment is not None
    return refund, payment


async def settle_refund(deps: Dependencies, refund: Refund) -> tuple[Refund, Payment]:
    outcome = await refund_with_retries(
        deps.gateway, refund, deps.retry, deps.gateway_timeout_seconds
    )
    refund.settle(outcome)
    async with deps.unit_of_work() as uow:
        payments, refunds = PaymentRepository(uow.conn), RefundRepository(uow.conn)
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
            uow.emit(_refunded(recorded, payment))
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


# Recovery ───────────────────────────────────────────────────────────────────────────────────


async def settle_stale(deps: Dependencies, batch: int = 100) -> int:
    """Settle payments and refunds a crash left PENDING. Returns how many it settled (a
    refund whose gateway is still down is not counted: the caller must not spin on it)."""
    async with deps.unit_of_work() as uow:
        payments = await PaymentRepository(uow.conn).stale_pending(deps.stale_after_seconds, batch)
        refunds = await RefundRepository(uow.conn).stale_pending(deps.stale_after_seconds, batch)
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
        await compensation.resolve_nothing_charged(uow.conn)
        order_ids = await compensation.orders_to_check(uow.conn, batch)
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
                    uow.emit(_refund_requested(refund, payment))
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
            await compensation.resolve(uow.conn, order_id, outcome)
        resolved += 1
        if refund is not None:
            try:
                await settle_refund(deps, refund)
            except GatewayDown:
                log.warning("refund %s waits for the gateway", refund.refund_id)
    return resolved


# Events ─────────────────────────────────────────────────────────────────────────────────────


def _payment_fields(p: Payment) -> dict[str, object]:
    return {
        "payment_id": p.payment_id,
        "order_id": p.order_id,
        "customer_id": p.customer_id,
        "reservation_id": p.reservation_id,
        "amount": money_to_proto(p.amount),
        "payment_method": method_to_proto(p.method),
    }


def _requested(p: Payment) -> events_pb2.PaymentRequested:
    return new_event(events_pb2.PaymentRequested, **_payment_fields(p))


def _processed_at(p: Payment) -> dict[str, object]:
    return {"processed_at": timestamp(p.processed_at)} if p.processed_at else {}


def _succeeded(p: Payment) -> events_pb2.PaymentSucceeded:
    return new_event(
        events_pb2.PaymentSucceeded,
        **_payment_fields(p),
        **_processed_at(p),
        transaction_id=p.transaction_id,
        is_simulated=p.is_simulated,
    )


def _failed(p: Payment) -> events_pb2.PaymentFailed:
    return new_event(
        events_pb2.PaymentFailed,
        **_payment_fields(p),
        **_processed_at(p),
        error_code=p.error_code,
        error_message=p.error_message,
        failure_reason=p.failure_reason,
        is_simulated=p.is_simulated,
    )


def _refund_requested(r: Refund, p: Payment) -> events_pb2.RefundRequested:
    return new_event(
        events_pb2.RefundRequested,
        refund_id=r.refund_id,
        payment_id=p.payment_id,
        order_id=p.order_id,
        customer_id=p.customer_id,
        amount=money_to_proto(r.amount),
        reason=r.reason,
    )


def _refunded(r: Refund, p: Payment) -> events_pb2.PaymentRefunded:
    return new_event(
        events_pb2.PaymentRefunded,
        refund_id=r.refund_id,
        payment_id=p.payment_id,
        order_id=p.order_id,
        customer_id=p.customer_id,
        amount=money_to_proto(r.amount),
        refunded_total=amount_to_proto(p.amount.currency, p.refunded),
        fully_refunded=p.fully_refunded,
        reason=r.reason,
        transaction_id=r.transaction_id,
    )
