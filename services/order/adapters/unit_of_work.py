"""Order's unit of work on PostgreSQL: the core's transaction with Order's repository."""

from __future__ import annotations

from services.common.uow import UnitOfWork
from services.order.adapters.repository import OrderRepository


class SqlOrderUnitOfWork(UnitOfWork):
    @property
    def orders(self) -> OrderRepository:
        return OrderRepository(self.conn)
