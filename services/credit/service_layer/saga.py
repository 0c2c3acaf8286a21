"""Credit's part of the order-payment saga: reacting to order and payment events.

Each handler runs inside the unit of work that also records the event in the inbox, so its
effect happens once. Lock order everywhere: reservation row, then account row. Business
outcomes (no credits, a late event) are answered with events or ignored with a log line;
only transient failures raise (the message is then redelivered).
"""

from __future__ import annotations

import logging

from services.common.errors import DomainError
from services.common.events import new_event
from services.common.money import Money
from services.common.proto_mapping import money_to_proto, timestamp
from services.common.uow import UnitOfWork
from services.credit.adapters.repository import AccountRepository
from services.credit.adapters.reservations import ReservationRepository
from services.credit.domain.model import CreditAccount
from services.credit.domain.reservation import ReleaseReason, Reservation, ReservationState
from shop.credit.v1 import events_pb2 as credit_events
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events

log = logging.getLogger(__name__)


async def reserve_for_order(
    uow: UnitOfWork, event: order_events.OrderCreated, ttl_seconds: int
) -> None:
    reservations = ReservationRepository(uow.conn)
    if await reservations.order_was_cancelled(event.order_id):
        log.info("order %s was cancelled before its hold; not reserving", event.order_id)
        return
    if await reservations.for_order(event.order_id) is not None:
        return  # already held (the database would refuse a second one anyway)
    total = Money(event.total.currency_code, event.total.minor_units)
    account = await AccountRepository(uow.conn).get(event.customer_id, for_update=True)
    if account is None:
        _reservation_failed(uow, event, "ACCOUNT_NOT_FOUND", "the customer has no credit account")
        return
    try:
        account.account.reserve(total)
    except DomainError as refused:  # CURRENCY_MISMATCH, INSUFFICIENT_CREDITS, INVALID_AMOUNT
        _reservation_failed(uow, event, refused.reason, refused.message)
        return
    await AccountRepository(uow.conn).save(account.account)
    hold = await reservations.add(event.customer_id, event.order_id, total, ttl_seconds)
    uow.emit(
        new_event(
            credit_events.CreditsReserved,
            reservation_id=hold.reservation_id,
            order_id=hold.order_id,
            customer_id=hold.customer_id,
            amount=money_to_proto(hold.amount),
            expires_at=timestamp(hold.expires_at),
        )
    )
    log.info("reserved %s for order %s", total, event.order_id)


def _reservation_failed(
    uow: UnitOfWork, event: order_events.OrderCreated, reason: str, message: str
) -> None:
    log.info("no hold for order %s: %s", event.order_id, reason)
    uow.emit(
        new_event(
            credit_events.CreditReservationFailed,
            order_id=event.order_id,
            customer_id=event.customer_id,
            amount=event.total,
            reason=reason,
            message=message,
        )
    )


async def release_for_cancelled_order(uow: UnitOfWork, event: order_events.OrderCancelled) -> None:
    reservations = ReservationRepository(uow.conn)
    await reservations.mark_order_cancelled(event.order_id)
    await _release(uow, event.order_id, ReleaseReason.ORDER_CANCELLED)


async def release_for_failed_payment(uow: UnitOfWork, event: payment_events.PaymentFailed) -> None:
    await _release(uow, event.order_id, ReleaseReason.PAYMENT_FAILED)


async def _release(uow: UnitOfWork, order_id: str, reason: ReleaseReason) -> None:
    hold = await ReservationRepository(uow.conn).for_order(order_id, for_update=True)
    if hold is None or not hold.is_active:
        return  # nothing held (any more): a late or repeated request
    hold.release(reason)
    await _give_back(uow, hold)


async def expire(uow: UnitOfWork, hold: Reservation) -> None:
    """Release one locked, overdue hold (the sweeper's unit of work)."""
    hold.expire()
    await _give_back(uow, hold)


async def _give_back(uow: UnitOfWork, hold: Reservation) -> None:
    accounts = AccountRepository(uow.conn)
    account = await _locked_account(accounts, hold.customer_id)
    account.release(hold.amount)
    await accounts.save(account)
    await ReservationRepository(uow.conn).save(hold)
    uow.emit(
        new_event(
            credit_events.CreditsReleased,
            reservation_id=hold.reservation_id,
            order_id=hold.order_id,
            customer_id=hold.customer_id,
            amount=money_to_proto(hold.amount),
            reason=hold.release_reason,
        )
    )
    log.info("released %s of order %s: %s", hold.amount, hold.order_id, hold.release_reason)


async def capture_for_payment(uow: UnitOfWork, event: payment_events.PaymentSucceeded) -> None:
    reservations = ReservationRepository(uow.conn)
    hold = await reservations.for_order(event.order_id, for_update=True)
    if hold is None:
        log.error(
            "payment %s succeeded for order %s, which has no hold", event.payment_id, event.order_id
        )
        return
    if hold.state is ReservationState.CAPTURED:
        return
    accounts = AccountRepository(uow.conn)
    account = await _locked_account(accounts, hold.customer_id)
    if hold.is_active:
        hold.capture(event.payment_id)
        account.capture(hold.amount)
    else:
        # The payment raced the hold's expiry or the order's cancellation and won at the
        # gateway: the customer paid, so take the credits from what is available.
        try:
            account.reserve(hold.amount)
        except DomainError as refused:
            log.error(
                "payment %s succeeded after hold %s was %s and credits are short (%s);"
                " needs reconciliation",
                event.payment_id,
                hold.reservation_id,
                hold.state.value,
                refused.reason,
            )
            return
        account.capture(hold.amount)
        hold.capture_after_release(event.payment_id)
    await accounts.save(account)
    await reservations.save(hold)
    uow.emit(
        new_event(
            credit_events.CreditsCaptured,
            reservation_id=hold.reservation_id,
            order_id=hold.order_id,
            customer_id=hold.customer_id,
            amount=money_to_proto(hold.amount),
            payment_id=event.payment_id,
        )
    )


async def refund(uow: UnitOfWork, event: payment_events.PaymentRefunded) -> None:
    amount = Money(event.amount.currency_code, event.amount.minor_units)
    accounts = AccountRepository(uow.conn)
    account = await _locked_account(accounts, event.customer_id)
    try:
        account.refund(amount)
    except DomainError as refused:
        log.error("cannot give back refund %s (%s): %s", event.refund_id, amount, refused)
        return
    await accounts.save(account)
    uow.emit(
        new_event(
            credit_events.CreditsRefunded,
            customer_id=event.customer_id,
            order_id=event.order_id,
            payment_id=event.payment_id,
            refund_id=event.refund_id,
            amount=event.amount,
        )
    )


async def _locked_account(accounts: AccountRepository, customer_id: str) -> CreditAccount:
    stored = await accounts.get(customer_id, for_update=True)
    if stored is None:  # a hold or a capture implies the account exists
        raise LookupError(f"credit account {customer_id} is missing")
    return stored.account
