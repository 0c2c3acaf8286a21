"""Credit use cases: plain functions over a unit of work."""

from __future__ import annotations

from services.common.errors import NotFound
from services.common.events import new_event
from services.common.money import Money
from services.common.paging import PageCursor
from services.common.proto_mapping import amount_to_proto, money_to_proto
from services.credit.adapters.repository import StoredAccount
from services.credit.adapters.reservations import StoredReservation
from services.credit.service_layer.ports import CreditUnitOfWork
from shop.credit.v1 import events_pb2


class AccountNotFound(NotFound):
    def __init__(self, customer_id: str) -> None:
        super().__init__(
            f"customer {customer_id} has no credit account (top up to open one)",
            "ACCOUNT_NOT_FOUND",
            {"customer_id": customer_id},
        )


class ReservationNotFound(NotFound):
    def __init__(self, reservation_id: str) -> None:
        super().__init__(
            f"reservation {reservation_id} does not exist",
            "RESERVATION_NOT_FOUND",
            {"reservation_id": reservation_id},
        )


async def top_up(
    uow: CreditUnitOfWork, customer_id: str, amount: Money, request_id: str
) -> StoredAccount:
    accounts = uow.accounts
    stored = await accounts.get_or_open(customer_id, amount.currency)
    account = stored.account
    account.top_up(amount)
    updated_at = await accounts.save(account)
    uow.emit(
        new_event(
            events_pb2.CreditsToppedUp,
            customer_id=customer_id,
            amount=money_to_proto(amount),
            request_id=request_id,
            available=amount_to_proto(account.currency, account.available),
        )
    )
    return StoredAccount(account, updated_at)


async def get_account(uow: CreditUnitOfWork, customer_id: str) -> StoredAccount:
    stored = await uow.accounts.get(customer_id)
    if stored is None:
        raise AccountNotFound(customer_id)
    return stored


async def get_reservation(uow: CreditUnitOfWork, reservation_id: str) -> StoredReservation:
    stored = await uow.reservations.get(reservation_id)
    if stored is None:
        raise ReservationNotFound(reservation_id)
    return stored


async def list_reservations(
    uow: CreditUnitOfWork, customer_id: str, after: PageCursor | None, limit: int
) -> list[StoredReservation]:
    return await uow.reservations.list_for_customer(customer_id, after, limit)
