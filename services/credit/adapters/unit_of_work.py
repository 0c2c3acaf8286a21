"""Credit's unit of work on PostgreSQL: the core's transaction with Credit's repositories."""

from __future__ import annotations

from services.common.uow import UnitOfWork
from services.credit.adapters.repository import AccountRepository
from services.credit.adapters.reservations import RefundLedger, ReservationRepository


class SqlCreditUnitOfWork(UnitOfWork):
    @property
    def accounts(self) -> AccountRepository:
        return AccountRepository(self.conn)

    @property
    def reservations(self) -> ReservationRepository:
        return ReservationRepository(self.conn)

    @property
    def refunds(self) -> RefundLedger:
        return RefundLedger(self.conn)
