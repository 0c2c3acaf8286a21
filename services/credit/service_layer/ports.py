"""What Credit's use cases need from storage, as small Protocols (cosmicpython's
AbstractRepository and AbstractUnitOfWork): PostgreSQL in production
(services/credit/adapters), in-memory fakes in the saga's unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from google.protobuf.message import Message

from services.common.money import Money
from services.common.paging import PageCursor
from services.credit.domain.model import CreditAccount
from services.credit.domain.reservation import Reservation


class BeforeReserving(Enum):
    """What Credit already knows of an order when its `orders.created` arrives."""

    NOTHING = "nothing"  # reserve
    CANCELLED = "cancelled"  # cancelled before its hold was placed: no hold, ever
    HELD = "held"  # already held (a redelivery): nothing to do


class Accounts(Protocol):
    async def get(self, customer_id: str, *, for_update: bool = False) -> CreditAccount | None:
        """The customer's account (row-locked when `for_update`), or None."""
        ...

    async def get_or_open(self, customer_id: str, currency: str) -> CreditAccount:
        """The customer's account, locked, opened empty in `currency` if there was none."""
        ...

    async def save(self, account: CreditAccount) -> CreditAccount:
        """Store the balances; returns the account as stored (its new `updated_at`)."""
        ...


class Reservations(Protocol):
    async def get(self, reservation_id: str) -> Reservation | None: ...

    async def for_order(self, order_id: str, *, for_update: bool = False) -> Reservation | None:
        """The order's hold (there is at most one), row-locked when `for_update`."""
        ...

    async def add(
        self, customer_id: str, order_id: str, amount: Money, ttl_seconds: int
    ) -> Reservation:
        """A new ACTIVE hold expiring `ttl_seconds` from now."""
        ...

    async def save(self, reservation: Reservation) -> None: ...

    async def overdue(self, limit: int) -> list[Reservation]:
        """ACTIVE holds past their expiry, not locked."""
        ...

    async def lock_if_overdue(self, reservation_id: str) -> Reservation | None:
        """The hold, row-locked, if it is still ACTIVE and overdue."""
        ...

    async def list_for_customer(
        self, customer_id: str, after: PageCursor | None, limit: int
    ) -> list[Reservation]: ...

    async def mark_order_cancelled(self, order_id: str) -> None: ...

    async def before_reserving(self, order_id: str) -> BeforeReserving:
        """What is already known of the order when its hold is to be placed (one read)."""
        ...


@dataclass(frozen=True, slots=True)
class AppliedRefund:
    """A refund Credit has applied: what Payment refunded, and what it gave back for it."""

    refund_id: str
    payment_id: str
    order_id: str
    customer_id: str
    requested: Money
    given_back: Money


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """What Credit could not square, for people to reconcile (LATE_CAPTURE_SHORT,
    REFUND_NOT_CAPTURED, REFUND_OVER_CAPTURE)."""

    kind: str
    customer_id: str
    order_id: str
    payment_id: str
    amount: Money
    detail: str
    refund_id: str | None = None


class Refunds(Protocol):
    """The refunds Credit applied, and what it could not square (for reconciliation)."""

    async def applied(self, refund_id: str) -> bool: ...

    async def record(self, refund: AppliedRefund) -> None:
        """Keep it, once per refund id (a second one is refused by the store)."""
        ...

    async def note(self, discrepancy: Discrepancy) -> None:
        """Keep it for reconciliation (and count it once the work commits)."""
        ...

    async def late_capture_refused(self, payment_id: str) -> bool: ...


class CreditUnitOfWork(Protocol):
    """One atomic piece of Credit's work: its repositories and the events it emits."""

    @property
    def accounts(self) -> Accounts: ...

    @property
    def reservations(self) -> Reservations: ...

    @property
    def refunds(self) -> Refunds: ...

    def emit(self, event: Message) -> None:
        """Queue an event; it is published if, and only if, the work commits."""
        ...
