"""What Order's use cases need from storage, as small Protocols: PostgreSQL in production
(services/order/adapters), in-memory fakes in the saga's unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from google.protobuf.message import Message

from services.common.paging import Fetched, PageCursor
from services.order.domain.model import Order, OrderStatus


class Orders(Protocol):
    async def add(self, order: Order) -> Order:
        """Store a new order; returns it with the store's timestamps."""
        ...

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        """The order (row-locked when `for_update`), or None."""
        ...

    async def save(self, order: Order) -> Order:
        """Write the lifecycle fields back (items and total never change)."""
        ...

    async def list_for_customer(
        self, customer_id: str, after: PageCursor | None, limit: int
    ) -> Fetched[Order]:
        """Up to `limit` orders, newest first (fewer when their items reach the store's bound)."""
        ...


class OrderUnitOfWork(Protocol):
    """One atomic piece of Order's work: its orders and the events it emits."""

    @property
    def orders(self) -> Orders: ...

    def emit(self, event: Message) -> None:
        """Queue an event; it is published if, and only if, the work commits."""
        ...


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A committed change of one order's status, as the status feed announces it: the
    fields a status change can touch."""

    order_id: str
    status: OrderStatus
    reservation_id: str
    payment_id: str
    failure_reason: str
    updated_at: datetime
    reread: bool  # the announcement left something out: read the order instead


class Changes(Protocol):
    """The changes of one order as one WatchOrder stream hears them."""

    async def next(self) -> StatusChange | None:
        """The next change; None when it may have missed some (read the order again)."""
        ...
