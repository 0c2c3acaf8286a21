"""What Order's use cases need from storage, as small Protocols: PostgreSQL in production
(services/order/adapters), in-memory fakes in the saga's unit tests."""

from __future__ import annotations

from typing import Protocol

from google.protobuf.message import Message

from services.common.paging import Fetched, PageCursor
from services.order.adapters.repository import StoredOrder
from services.order.domain.model import Order


class Orders(Protocol):
    async def add(self, order: Order) -> StoredOrder: ...

    async def get(self, order_id: str, *, for_update: bool = False) -> StoredOrder | None:
        """The order (row-locked when `for_update`), or None."""
        ...

    async def save(self, order: Order) -> StoredOrder:
        """Write the lifecycle fields back (items and total never change)."""
        ...

    async def list_for_customer(
        self, customer_id: str, after: PageCursor | None, limit: int
    ) -> Fetched[StoredOrder]:
        """Up to `limit` orders, newest first (fewer when their items reach the store's bound)."""
        ...


class OrderUnitOfWork(Protocol):
    """One atomic piece of Order's work: its orders and the events it emits."""

    @property
    def orders(self) -> Orders: ...

    def emit(self, event: Message) -> None:
        """Queue an event; it is published if, and only if, the work commits."""
        ...
