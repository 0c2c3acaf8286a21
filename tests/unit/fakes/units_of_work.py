"""In-memory units of work for the sagas' unit tests: the same Protocols the PostgreSQL
adapters implement (services/*/service_layer/ports.py), with a transaction's all-or-nothing
(`apply` restores every table when the handler raises) and no server."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import Message

from services.common.money import Money
from services.common.paging import Fetched, PageCursor
from services.credit.adapters.repository import StoredAccount
from services.credit.adapters.reservations import StoredReservation
from services.credit.domain.model import CreditAccount
from services.credit.domain.reservation import Reservation, ReservationState
from services.order.adapters.repository import StoredOrder
from services.order.domain.model import Order

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = EPOCH

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class _Transactional:
    """Tables that a failed unit of work leaves as they were."""

    events: list[Message]

    def _tables(self) -> dict[str, Any]:
        raise NotImplementedError

    def emit(self, event: Message) -> None:
        self.events.append(event)

    async def apply(self, handler: Callable[[Any, Any], Awaitable[Any]], event: Any) -> Any:
        before = copy.deepcopy(self._tables())
        emitted = len(self.events)
        try:
            return await handler(self, event)
        except BaseException:
            for name, table in before.items():
                setattr(self, name, table)
            del self.events[emitted:]
            raise


# Credit ─────────────────────────────────────────────────────────────────────────────────────


@dataclass
class FakeAccounts:
    clock: Clock
    rows: dict[str, CreditAccount] = field(default_factory=dict)

    async def get(self, customer_id: str, *, for_update: bool = False) -> StoredAccount | None:
        account = self.rows.get(customer_id)
        return StoredAccount(copy.copy(account), self.clock.now) if account else None

    async def get_or_open(self, customer_id: str, currency: str) -> StoredAccount:
        self.rows.setdefault(customer_id, CreditAccount(customer_id, currency))
        stored = await self.get(customer_id)
        assert stored is not None
        return stored

    async def save(self, account: CreditAccount) -> datetime:
        assert account.is_balanced, account
        self.rows[account.customer_id] = copy.copy(account)
        return self.clock.now


@dataclass
class FakeReservations:
    clock: Clock
    rows: dict[str, Reservation] = field(default_factory=dict)
    created: dict[str, datetime] = field(default_factory=dict)
    cancelled_orders: set[str] = field(default_factory=set)

    async def get(self, reservation_id: str) -> StoredReservation | None:
        hold = self.rows.get(reservation_id)
        if hold is None:
            return None
        at = self.created[reservation_id]
        return StoredReservation(copy.copy(hold), at, at)

    async def for_order(self, order_id: str, *, for_update: bool = False) -> Reservation | None:
        found = [h for h in self.rows.values() if h.order_id == order_id]
        return copy.copy(found[0]) if found else None

    async def add(
        self, customer_id: str, order_id: str, amount: Money, ttl_seconds: int
    ) -> Reservation:
        assert await self.for_order(order_id) is None, "one hold per order (a UNIQUE)"
        hold = Reservation(
            reservation_id=str(uuid.uuid4()),
            customer_id=customer_id,
            order_id=order_id,
            amount=amount,
            state=ReservationState.ACTIVE,
            expires_at=self.clock.now + timedelta(seconds=ttl_seconds),
        )
        self.rows[hold.reservation_id] = copy.copy(hold)
        self.created[hold.reservation_id] = self.clock.now
        return hold

    async def save(self, reservation: Reservation) -> None:
        assert 0 <= reservation.refunded <= reservation.amount.minor_units
        self.rows[reservation.reservation_id] = copy.copy(reservation)

    async def overdue(self, limit: int) -> list[Reservation]:
        due = [h for h in self.rows.values() if h.is_expired_at(self.clock.now)]
        return [copy.copy(h) for h in sorted(due, key=lambda h: h.expires_at)[:limit]]

    async def lock_if_overdue(self, reservation_id: str) -> Reservation | None:
        hold = self.rows.get(reservation_id)
        return copy.copy(hold) if hold and hold.is_expired_at(self.clock.now) else None

    async def list_for_customer(
        self, customer_id: str, after: PageCursor | None, limit: int
    ) -> list[StoredReservation]:
        raise NotImplementedError  # a read for the API, not the saga's

    async def mark_order_cancelled(self, order_id: str) -> None:
        self.cancelled_orders.add(order_id)

    async def order_was_cancelled(self, order_id: str) -> bool:
        return order_id in self.cancelled_orders


@dataclass
class FakeRefunds:
    applied_rows: dict[str, tuple[int, int]] = field(default_factory=dict)  # requested, given
    notes: list[tuple[str, str, int]] = field(default_factory=list)  # kind, payment, amount

    async def applied(self, refund_id: str) -> bool:
        return refund_id in self.applied_rows

    async def record(
        self,
        refund_id: str,
        payment_id: str,
        order_id: str,
        customer_id: str,
        requested: Money,
        given_back: Money,
    ) -> None:
        assert refund_id not in self.applied_rows, "refund_id is the primary key"
        self.applied_rows[refund_id] = (requested.minor_units, given_back.minor_units)

    async def note(
        self,
        kind: str,
        *,
        customer_id: str,
        order_id: str,
        payment_id: str,
        amount: Money,
        detail: str,
        refund_id: str | None = None,
    ) -> None:
        self.notes.append((kind, payment_id, amount.minor_units))

    async def late_capture_refused(self, payment_id: str) -> bool:
        return any(k == "LATE_CAPTURE_SHORT" and p == payment_id for k, p, _ in self.notes)


class FakeCreditUnitOfWork(_Transactional):
    def __init__(self) -> None:
        self.clock = Clock()
        self.accounts = FakeAccounts(self.clock)
        self.reservations = FakeReservations(self.clock)
        self.refunds = FakeRefunds()
        self.events = []

    def _tables(self) -> dict[str, Any]:
        return {
            "accounts": self.accounts,
            "reservations": self.reservations,
            "refunds": self.refunds,
        }


# Order ──────────────────────────────────────────────────────────────────────────────────────


@dataclass
class FakeOrders:
    rows: dict[str, Order] = field(default_factory=dict)

    def _stored(self, order: Order) -> StoredOrder:
        return StoredOrder(copy.deepcopy(order), EPOCH, EPOCH)

    async def add(self, order: Order) -> StoredOrder:
        assert order.order_id not in self.rows
        self.rows[order.order_id] = copy.deepcopy(order)
        return self._stored(order)

    async def get(self, order_id: str, *, for_update: bool = False) -> StoredOrder | None:
        order = self.rows.get(order_id)
        return self._stored(order) if order else None

    async def save(self, order: Order) -> StoredOrder:
        self.rows[order.order_id] = copy.deepcopy(order)
        return self._stored(order)

    async def list_for_customer(
        self, customer_id: str, after: PageCursor | None, limit: int
    ) -> Fetched[StoredOrder]:
        raise NotImplementedError  # a read for the API, not the saga's


class FakeOrderUnitOfWork(_Transactional):
    def __init__(self) -> None:
        self.orders = FakeOrders()
        self.events = []

    def _tables(self) -> dict[str, Any]:
        return {"orders": self.orders}
