"""Credit use cases: plain functions over a unit of work."""

from __future__ import annotations

from services.common.errors import NotFound, found
from services.common.money import Money
from services.common.paging import PageCursor
from services.credit.adapters.proto_mapping import credits_topped_up
from services.credit.domain.model import CreditAccount
from services.credit.domain.reservation import Reservation
from services.credit.service_layer.ports import CreditUnitOfWork


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
) -> CreditAccount:
    accounts = uow.accounts
    account = await accounts.get_or_open(customer_id, amount.currency)
    account.top_up(amount)
    saved = await accounts.save(account)
    uow.emit(credits_topped_up(saved, amount, request_id))
    return saved


async def get_account(uow: CreditUnitOfWork, customer_id: str) -> CreditAccount:
    return found(await uow.accounts.get(customer_id), AccountNotFound(customer_id))


async def get_reservation(uow: CreditUnitOfWork, reservation_id: str) -> Reservation:
    return found(await uow.reservations.get(reservation_id), ReservationNotFound(reservation_id))


async def list_reservations(
    uow: CreditUnitOfWork, customer_id: str, after: PageCursor | None, limit: int
) -> list[Reservation]:
    return await uow.reservations.list_for_customer(customer_id, after, limit)
