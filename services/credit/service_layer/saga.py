"""Credit's part of the order-payment saga: reacting to order and payment events.

Each handler runs inside the unit of work that also records the event in the inbox, so its
effect happens once. Lock order everywhere, handlers, batches and the expiry sweeper alike:
the customer's account row first, then the order's hold (batches take customers in order),
so no two Credit transactions can deadlock. Business outcomes (no credits, a late event) are
answered with events or ignored with a log line; an event that contradicts the books is
poison (PoisonEvent); only transient failures raise otherwise (the message is redelivered).
"""

from __future__ import annotations

import logging

from services.common.errors import DomainError
from services.common.inbox import PoisonEvent
from services.common.money import Money
from services.credit.adapters.proto_mapping import (
    credits_captured,
    credits_refunded,
    credits_released,
    credits_reserved,
    reservation_failed,
)
from services.credit.domain.model import CreditAccount
from services.credit.domain.reservation import ReleaseReason, Reservation, ReservationState
from services.credit.service_layer.ports import (
    Accounts,
    AppliedRefund,
    BeforeReserving,
    CreditUnitOfWork,
    Discrepancy,
)
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events

log = logging.getLogger(__name__)


async def reserve_for_order(
    uow: CreditUnitOfWork, event: order_events.OrderCreated, ttl_seconds: int
) -> None:
    reservations = uow.reservations
    seen = await reservations.before_reserving(event.order_id)
    if seen is BeforeReserving.CANCELLED:
        log.info("order %s was cancelled before its hold; not reserving", event.order_id)
        return
    if seen is BeforeReserving.HELD:
        return  # the database would refuse a second hold anyway
    total = Money(event.total.currency_code, event.total.minor_units)
    account = await uow.accounts.get(event.customer_id, for_update=True)
    if account is None:
        _reservation_failed(
            uow, event, total, "ACCOUNT_NOT_FOUND", "the customer has no credit account"
        )
        return
    try:
        account.reserve(total)
    except DomainError as refused:  # CURRENCY_MISMATCH, INSUFFICIENT_CREDITS, INVALID_AMOUNT
        _reservation_failed(uow, event, total, refused.reason, refused.message)
        return
    await uow.accounts.save(account)
    hold = await reservations.add(event.customer_id, event.order_id, total, ttl_seconds)
    uow.emit(credits_reserved(hold))
    log.info("reserved %s for order %s", total, event.order_id)


def _reservation_failed(
    uow: CreditUnitOfWork,
    event: order_events.OrderCreated,
    total: Money,
    reason: str,
    message: str,
) -> None:
    log.info("no hold for order %s: %s", event.order_id, reason)
    uow.emit(reservation_failed(event.order_id, event.customer_id, total, reason, message))


async def release_for_cancelled_order(
    uow: CreditUnitOfWork, event: order_events.OrderCancelled
) -> None:
    reservations = uow.reservations
    await reservations.mark_order_cancelled(event.order_id)
    await _release(uow, event.customer_id, event.order_id, ReleaseReason.ORDER_CANCELLED)


async def release_for_failed_payment(
    uow: CreditUnitOfWork, event: payment_events.PaymentFailed
) -> None:
    await _release(uow, event.customer_id, event.order_id, ReleaseReason.PAYMENT_FAILED)


async def _release(
    uow: CreditUnitOfWork, customer_id: str, order_id: str, reason: ReleaseReason
) -> None:
    account, hold = await _lock(uow, customer_id, order_id)
    if account is None or hold is None or not hold.is_active:
        return  # nothing held (any more): a late or repeated request
    hold.release(reason)
    await _give_back(uow, account, hold)


async def expire(uow: CreditUnitOfWork, overdue: Reservation) -> bool:
    """Release one overdue hold (the sweeper's unit of work): its account is locked first,
    then the hold, which is released only if it is still active. False if it moved."""
    account = await _locked_account(uow.accounts, overdue.customer_id)
    hold = await uow.reservations.lock_if_overdue(overdue.reservation_id)
    if hold is None:
        return False  # captured, released or swept by another replica meanwhile
    hold.expire()
    await _give_back(uow, account, hold)
    return True


async def _give_back(uow: CreditUnitOfWork, account: CreditAccount, hold: Reservation) -> None:
    account.release(hold.amount)
    await uow.accounts.save(account)
    await uow.reservations.save(hold)
    uow.emit(credits_released(hold))
    log.info("released %s of order %s: %s", hold.amount, hold.order_id, hold.release_reason)


async def capture_for_payment(
    uow: CreditUnitOfWork, event: payment_events.PaymentSucceeded
) -> None:
    account, hold = await _lock(uow, event.customer_id, event.order_id)
    if account is None or hold is None:
        log.error(
            "payment %s succeeded for order %s, which has no hold", event.payment_id, event.order_id
        )
        return
    if hold.state is ReservationState.CAPTURED:
        return
    if hold.is_active:
        hold.capture(event.payment_id)
        account.capture(hold.amount)
    else:
        # The payment raced the hold's expiry or the order's cancellation and won at the
        # gateway: the customer paid, so take the credits from what is available.
        try:
            account.reserve(hold.amount)
        except DomainError as refused:
            # The released credits are held or spent by other orders: nothing is taken. The
            # order stays cancelled, so Payment refunds this payment at the gateway, and
            # that refund then gives nothing back here either (see `refund`).
            log.error(
                "payment %s succeeded after hold %s was %s and credits are short (%s);"
                " nothing captured, noted for reconciliation",
                event.payment_id,
                hold.reservation_id,
                hold.state.value,
                refused.reason,
                extra={"order_id": hold.order_id, "payment_id": event.payment_id},
            )
            await uow.refunds.note(
                Discrepancy(
                    "LATE_CAPTURE_SHORT",
                    customer_id=hold.customer_id,
                    order_id=hold.order_id,
                    payment_id=event.payment_id,
                    amount=hold.amount,
                    detail=f"hold {hold.state.value}; {refused.reason}",
                )
            )
            return
        account.capture(hold.amount)
        hold.capture_after_release(event.payment_id)
    await uow.accounts.save(account)
    await uow.reservations.save(hold)
    uow.emit(credits_captured(hold, event.payment_id))


class CaptureNotYetApplied(Exception):
    """A refund arrived before its payment's capture was applied here (the capture failed
    for a moment and waits for redelivery): the refund waits too."""


async def refund(uow: CreditUnitOfWork, event: payment_events.PaymentRefunded) -> None:
    """Give credits back for a refund: only against the hold that this payment captured,
    never more than that hold captured, once per refund id. A refund of a payment that
    captured nothing here gives nothing back and is noted for reconciliation."""
    requested = Money(event.amount.currency_code, event.amount.minor_units)
    account, hold = await _lock(uow, event.customer_id, event.order_id)
    ledger = uow.refunds
    if await ledger.applied(event.refund_id):
        log.info("refund %s was applied before (a republished event)", event.refund_id)
        return
    if hold is not None and hold.is_captured_by(event.payment_id):
        given = hold.give_back(requested)
        kind = "REFUND_OVER_CAPTURE"
    elif hold is None or hold.state is ReservationState.CAPTURED:
        given = Money(requested.currency, 0)  # no hold, or captured by another payment
        kind = "REFUND_NOT_CAPTURED"
    elif await ledger.late_capture_refused(event.payment_id):
        given = Money(requested.currency, 0)  # the payment won too late to take anything
        kind = "REFUND_NOT_CAPTURED"
    else:
        raise CaptureNotYetApplied(
            f"refund {event.refund_id}: payment {event.payment_id}'s capture is not applied yet"
        )
    await ledger.record(
        AppliedRefund(
            event.refund_id, event.payment_id, event.order_id, event.customer_id, requested, given
        )
    )
    if given != requested:
        log.error(
            "refund %s of payment %s asks %s, %s given back (%s); noted for reconciliation",
            event.refund_id,
            event.payment_id,
            requested,
            given,
            kind,
            extra={"order_id": event.order_id, "payment_id": event.payment_id},
        )
        await ledger.note(
            Discrepancy(
                kind,
                customer_id=event.customer_id,
                order_id=event.order_id,
                payment_id=event.payment_id,
                refund_id=event.refund_id,
                amount=requested,
                detail=f"given back {given.minor_units} of {requested.minor_units}",
            )
        )
    if not given.is_positive:
        return
    assert account is not None  # a captured hold has its account
    assert hold is not None
    try:
        account.refund(given)
    except DomainError as refused:  # the books disagree with the hold: people must look
        raise PoisonEvent(f"refund {event.refund_id} cannot be given back: {refused}") from None
    await uow.accounts.save(account)
    await uow.reservations.save(hold)
    uow.emit(credits_refunded(hold, event.payment_id, event.refund_id, given))


async def _lock(
    uow: CreditUnitOfWork, customer_id: str, order_id: str
) -> tuple[CreditAccount | None, Reservation | None]:
    """Lock the customer's account, then the order's hold: Credit's one lock order."""
    account = await uow.accounts.get(customer_id, for_update=True)
    hold = await uow.reservations.for_order(order_id, for_update=True)
    if hold is not None and (account is None or hold.customer_id != customer_id):
        raise PoisonEvent(f"order {order_id}'s hold belongs to another customer than {customer_id}")
    return account, hold


async def _locked_account(accounts: Accounts, customer_id: str) -> CreditAccount:
    account = await accounts.get(customer_id, for_update=True)
    if account is None:  # a hold implies the account exists
        raise PoisonEvent(f"credit account {customer_id} is missing")
    return account
