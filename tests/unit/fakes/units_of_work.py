"""In-memory units of work for the sagas' unit tests: the same Protocols the PostgreSQL
adapters implement (services/*/service_layer/ports.py), with a transaction's all-or-nothing
(`apply` restores every table when the handler raises) and no server."""

from __future__ import annotations

import copy
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from google.protobuf.message import Message

from services.common.money import Money
from services.common.paging import Fetched, PageCursor
from services.credit.domain.model import CreditAccount
from services.credit.domain.reservation import Reservation, ReservationState
from services.credit.service_layer.ports import (
    AppliedRefund,
    BeforeReserving,
    CreditUnitOfWork,
    Discrepancy,
)
from services.order.domain.model import Order
from services.order.service_layer.ports import OrderUnitOfWork
from services.payment.domain.model import Payment, Refund, RefundStatus
from services.payment.service_layer.ports import PaymentUnitOfWork, RequestIdTaken

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

    async def get(self, customer_id: str, *, for_update: bool = False) -> CreditAccount | None:
        account = self.rows.get(customer_id)
        return copy.copy(account) if account else None

    async def get_or_open(self, customer_id: str, currency: str) -> CreditAccount:
        self.rows.setdefault(customer_id, CreditAccount(customer_id, currency))
        account = await self.get(customer_id)
        assert account is not None
        return account

    async def save(self, account: CreditAccount) -> CreditAccount:
        assert account.is_balanced, account
        stored = dataclasses.replace(account, updated_at=self.clock.now)
        self.rows[account.customer_id] = stored
        return copy.copy(stored)


@dataclass
class FakeReservations:
    clock: Clock
    rows: dict[str, Reservation] = field(default_factory=dict)
    cancelled_orders: set[str] = field(default_factory=set)

    async def get(self, reservation_id: str) -> Reservation | None:
        hold = self.rows.get(reservation_id)
        return copy.copy(hold) if hold else None

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
            created_at=self.clock.now,
            updated_at=self.clock.now,
        )
        self.rows[hold.reservation_id] = copy.copy(hold)
        return hold

    async def save(self, reservation: Reservation) -> None:
        assert 0 <= reservation.refunded <= reservation.amount.minor_units
        self.rows[reservation.reservation_id] = dataclasses.replace(
            reservation, updated_at=self.clock.now
        )

    async def overdue(self, limit: int) -> list[Reservation]:
        due = [h for h in self.rows.values() if h.is_expired_at(self.clock.now)]
        return [copy.copy(h) for h in sorted(due, key=lambda h: h.expires_at)[:limit]]

    async def lock_if_overdue(self, reservation_id: str) -> Reservation | None:
        hold = self.rows.get(reservation_id)
        return copy.copy(hold) if hold and hold.is_expired_at(self.clock.now) else None

    async def list_for_customer(
        self, customer_id: str, after: PageCursor | None, limit: int
    ) -> list[Reservation]:
        raise NotImplementedError  # a read for the API, not the saga's

    async def mark_order_cancelled(self, order_id: str) -> None:
        self.cancelled_orders.add(order_id)

    async def before_reserving(self, order_id: str) -> BeforeReserving:
        if order_id in self.cancelled_orders:
            return BeforeReserving.CANCELLED
        held = await self.for_order(order_id) is not None
        return BeforeReserving.HELD if held else BeforeReserving.NOTHING


@dataclass
class FakeRefunds:
    applied_rows: dict[str, tuple[int, int]] = field(default_factory=dict)  # requested, given
    notes: list[tuple[str, str, int]] = field(default_factory=list)  # kind, payment, amount

    async def applied(self, refund_id: str) -> bool:
        return refund_id in self.applied_rows

    async def record(self, refund: AppliedRefund) -> None:
        assert refund.refund_id not in self.applied_rows, "refund_id is the primary key"
        self.applied_rows[refund.refund_id] = (
            refund.requested.minor_units,
            refund.given_back.minor_units,
        )

    async def note(self, discrepancy: Discrepancy) -> None:
        d = discrepancy
        self.notes.append((d.kind, d.payment_id, d.amount.minor_units))

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

    async def add(self, order: Order) -> Order:
        assert order.order_id not in self.rows
        self.rows[order.order_id] = dataclasses.replace(order, created_at=EPOCH, updated_at=EPOCH)
        return copy.deepcopy(self.rows[order.order_id])

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        order = self.rows.get(order_id)
        return copy.deepcopy(order) if order else None

    async def save(self, order: Order) -> Order:
        self.rows[order.order_id] = dataclasses.replace(order, updated_at=EPOCH)
        return copy.deepcopy(self.rows[order.order_id])

    async def list_for_customer(
        self, customer_id: str, after: PageCursor | None, limit: int
    ) -> Fetched[Order]:
        raise NotImplementedError  # a read for the API, not the saga's


class FakeOrderUnitOfWork(_Transactional):
    def __init__(self) -> None:
        self.orders = FakeOrders()
        self.events = []

    def _tables(self) -> dict[str, Any]:
        return {"orders": self.orders}


# Payment ────────────────────────────────────────────────────────────────────────────────────


@dataclass
class FakePayments:
    rows: dict[str, Payment] = field(default_factory=dict)

    async def add(self, payment: Payment) -> Payment | None:
        if any(p.order_id == payment.order_id for p in self.rows.values()):
            return None  # one payment per order (a UNIQUE)
        self.rows[payment.payment_id] = dataclasses.replace(payment, created_at=EPOCH)
        return copy.deepcopy(self.rows[payment.payment_id])

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        payment = self.rows.get(payment_id)
        return copy.deepcopy(payment) if payment else None

    async def for_order(self, order_id: str, *, for_update: bool = False) -> Payment | None:
        found = [p for p in self.rows.values() if p.order_id == order_id]
        return copy.deepcopy(found[0]) if found else None

    async def record_settlement(self, payment: Payment) -> Payment | None:
        raise NotImplementedError  # ProcessPayment's, not the compensation's

    async def record_refunded(self, payment: Payment) -> Payment:
        raise NotImplementedError

    async def page(
        self, order_id: str | None, customer_id: str | None, after: PageCursor | None, limit: int
    ) -> list[Payment]:
        raise NotImplementedError

    async def stale_pending(self, older_than_seconds: float, limit: int) -> list[Payment]:
        raise NotImplementedError


@dataclass
class FakePaymentRefunds:
    rows: dict[str, tuple[Refund, bytes]] = field(default_factory=dict)

    async def add(self, refund: Refund, fingerprint: bytes) -> Refund:
        if await self.by_request_id(refund.request_id) is not None:
            raise RequestIdTaken(refund.request_id)
        assert refund.status is RefundStatus.PENDING
        self.rows[refund.refund_id] = (dataclasses.replace(refund, created_at=EPOCH), fingerprint)
        return copy.deepcopy(self.rows[refund.refund_id][0])

    async def by_request_id(self, request_id: str) -> tuple[Refund, bytes] | None:
        found = [(r, f) for r, f in self.rows.values() if r.request_id == request_id]
        return copy.deepcopy(found[0]) if found else None

    async def get(self, refund_id: str) -> Refund | None:
        row = self.rows.get(refund_id)
        return copy.deepcopy(row[0]) if row else None

    async def pending_total(self, payment_id: str) -> int:
        return sum(
            r.amount.minor_units
            for r, _ in self.rows.values()
            if r.payment_id == payment_id and r.status is RefundStatus.PENDING
        )

    async def record_settlement(self, refund: Refund) -> Refund | None:
        raise NotImplementedError

    async def stale_pending(self, older_than_seconds: float, limit: int) -> list[Refund]:
        raise NotImplementedError


@dataclass
class FakeCancelledOrders:
    reasons: dict[str, str] = field(default_factory=dict)
    refunds: dict[str, str] = field(default_factory=dict)  # order id -> compensating refund
    outcomes: dict[str, str] = field(default_factory=dict)

    async def note(self, order_id: str, reason: str) -> None:
        self.reasons.setdefault(order_id, reason)

    async def to_check(self, limit: int) -> list[str]:
        raise NotImplementedError  # the job's query; integration-tested

    async def resolve_nothing_charged(self, after_seconds: float) -> None:
        raise NotImplementedError

    async def refund_of(self, order_id: str) -> str | None:
        return self.refunds.get(order_id)

    async def mark_compensated(self, order_id: str, refund_id: str) -> None:
        self.refunds.setdefault(order_id, refund_id)

    async def resolve(self, order_id: str, outcome: str) -> None:
        self.outcomes.setdefault(order_id, outcome)


class FakePaymentUnitOfWork(_Transactional):
    def __init__(self) -> None:
        self.payments = FakePayments()
        self.refunds = FakePaymentRefunds()
        self.cancelled_orders = FakeCancelledOrders()
        self.events = []

    def _tables(self) -> dict[str, Any]:
        return {
            "payments": self.payments,
            "refunds": self.refunds,
            "cancelled_orders": self.cancelled_orders,
        }

    def payments_with_events(self, *events: Message) -> FakePayments:
        self.events.extend(events)
        return self.payments

    def autocommit(self) -> Self:
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


if TYPE_CHECKING:  # mypy holds each fake to its port, as it holds the PostgreSQL adapters
    _credit: CreditUnitOfWork = FakeCreditUnitOfWork()
    _order: OrderUnitOfWork = FakeOrderUnitOfWork()
    _payment: PaymentUnitOfWork = FakePaymentUnitOfWork()
