"""What the payment use cases need from the outside world, as ports: Order and Credit (read
over gRPC in production, fakes in tests), and storage as small Protocols (cosmicpython's
AbstractRepository and AbstractUnitOfWork; PostgreSQL in services/payment/adapters). The
gateway's port is domain/gateway.py; the caller's time budget is
services.common.grpc_client.Deadline."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

from google.protobuf.message import Message

from services.common.paging import PageCursor
from services.payment.domain.eligibility import HoldSnapshot, OrderSnapshot
from services.payment.domain.model import Payment, Refund


class Orders(Protocol):
    async def get_order(self, order_id: str, time_limit: float) -> OrderSnapshot | None:
        """The order, or None when Order says it does not exist."""
        ...


class Holds(Protocol):
    async def get_reservation(self, reservation_id: str, time_limit: float) -> HoldSnapshot | None:
        """The credit hold, or None when Credit says it does not exist."""
        ...


class RequestIdTaken(Exception):
    """A concurrent call recorded a refund with this request_id first."""


class Payments(Protocol):
    async def add(self, payment: Payment) -> Payment | None:
        """Insert a PENDING payment; None when the order already has one."""
        ...

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        """The payment (row-locked when `for_update`), or None."""
        ...

    async def for_order(self, order_id: str, *, for_update: bool = False) -> Payment | None:
        """The order's payment (there is at most one, row-locked when `for_update`), or None."""
        ...

    async def record_settlement(self, payment: Payment) -> Payment | None:
        """PENDING → the payment's new status; None if someone else settled it first."""
        ...

    async def record_refunded(self, payment: Payment) -> Payment:
        """Write the refunded total and status; the caller holds the row lock."""
        ...

    async def page(
        self, order_id: str | None, customer_id: str | None, after: PageCursor | None, limit: int
    ) -> list[Payment]:
        """The order's or the customer's payments after the cursor, newest first."""
        ...

    async def stale_pending(self, older_than_seconds: float, limit: int) -> list[Payment]:
        """PENDING payments older than the given age, oldest first."""
        ...


class Refunds(Protocol):
    async def add(self, refund: Refund, fingerprint: bytes) -> Refund:
        """Insert a PENDING refund; RequestIdTaken when its request_id is recorded already."""
        ...

    async def by_request_id(self, request_id: str) -> tuple[Refund, bytes] | None:
        """The refund recorded under this request_id, with its request's fingerprint."""
        ...

    async def get(self, refund_id: str) -> Refund | None:
        """The refund, or None."""
        ...

    async def pending_total(self, payment_id: str) -> int:
        """Minor units promised to refunds still at the gateway: not refundable again."""
        ...

    async def record_settlement(self, refund: Refund) -> Refund | None:
        """PENDING → SUCCEEDED/FAILED; None if someone else settled it first."""
        ...

    async def stale_pending(self, older_than_seconds: float, limit: int) -> list[Refund]:
        """PENDING refunds older than the given age, oldest first."""
        ...


class CancelledOrders(Protocol):
    async def note(self, order_id: str, reason: str) -> None:
        """Remember the order (an effect-free insert: a repeat changes nothing)."""
        ...

    async def to_check(self, limit: int) -> list[str]:
        """Open notes whose payment went through: the only ones that may need a refund."""
        ...

    async def resolve_nothing_charged(self, after_seconds: float) -> None:
        """Close the notes older than `after_seconds` that no payment can still appear for."""
        ...

    async def refund_of(self, order_id: str) -> str | None:
        """The compensating refund recorded for the order, if any."""
        ...

    async def mark_compensated(self, order_id: str, refund_id: str) -> None:
        """Keep the compensating refund's id on the order's note (once)."""
        ...

    async def resolve(self, order_id: str, outcome: str) -> None:
        """Close the order's note with its outcome."""
        ...


class PaymentUnitOfWork(Protocol):
    """One atomic piece of Payment's work (`async with`): its repositories and its events."""

    @property
    def payments(self) -> Payments: ...

    @property
    def refunds(self) -> Refunds: ...

    @property
    def cancelled_orders(self) -> CancelledOrders: ...

    def payments_with_events(self, *events: Message) -> Payments:
        """Payments whose one-statement writes carry `events` (autocommit only)."""
        ...

    def autocommit(self) -> Self:
        """No transaction: each statement commits on its own; emits no events."""
        ...

    def emit(self, event: Message) -> None:
        """Queue an event; it is published if, and only if, the work commits."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
