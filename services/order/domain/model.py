"""The order and its lifecycle. Pure rules, no I/O.

    PENDING ──credits.reserved──────────▶ RESERVED ──payments.succeeded──▶ PAID
       │  └─credits.reservation_failed──▶ REJECTED    │  │                  │
       │                                              │  └─payments.failed─▶ PAYMENT_FAILED
       └──────CancelOrder──▶ CANCELLED ◀──CancelOrder─┘                     │
                                 ▲ credits.released(EXPIRED) from RESERVED  │
                                                  REFUNDED ◀─full refund────┘

REJECTED, PAYMENT_FAILED, CANCELLED and REFUNDED are terminal. Commands on a state that does
not allow them raise FAILED_PRECONDITION; events that arrive late or out of order are refused
with False (the consumer logs them) so they can never move a terminal order.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from services.common.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.common.money import MAX_MINOR_UNITS, Money

MAX_SKU_LENGTH = 128
MAX_ITEMS = 500  # keeps one order (and its event) far below the gRPC message limit
DEFAULT_CANCEL_REASON = "CANCELLED_BY_CUSTOMER"
EXPIRED_REASON = "RESERVATION_EXPIRED"


class OrderStatus(enum.StrEnum):
    PENDING = "PENDING"
    RESERVED = "RESERVED"
    REJECTED = "REJECTED"
    PAID = "PAID"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    CANCELLED = "CANCELLED"
    REFUNDED = "REFUNDED"


class Trigger(enum.StrEnum):
    """What can move an order: the saga's events and the customer's cancel."""

    CREDITS_RESERVED = "credits.reserved"
    RESERVATION_FAILED = "credits.reservation_failed"
    RESERVATION_EXPIRED = "credits.released(EXPIRED)"
    CANCEL = "CancelOrder"
    PAYMENT_SUCCEEDED = "payments.succeeded"
    PAYMENT_FAILED = "payments.failed"
    FULLY_REFUNDED = "payments.refunded(full)"


S = OrderStatus
TRANSITIONS: dict[tuple[OrderStatus, Trigger], OrderStatus] = {
    (S.PENDING, Trigger.CREDITS_RESERVED): S.RESERVED,
    (S.PENDING, Trigger.RESERVATION_FAILED): S.REJECTED,
    (S.PENDING, Trigger.CANCEL): S.CANCELLED,
    (S.RESERVED, Trigger.CANCEL): S.CANCELLED,
    (S.RESERVED, Trigger.RESERVATION_EXPIRED): S.CANCELLED,
    (S.RESERVED, Trigger.PAYMENT_SUCCEEDED): S.PAID,
    (S.RESERVED, Trigger.PAYMENT_FAILED): S.PAYMENT_FAILED,
    (S.PAID, Trigger.FULLY_REFUNDED): S.REFUNDED,
}
TERMINAL = frozenset({S.REJECTED, S.PAYMENT_FAILED, S.CANCELLED, S.REFUNDED})


class OrderAlreadyPaid(FailedPrecondition):
    def __init__(self, order_id: str) -> None:
        super().__init__(
            f"order {order_id} is already paid; refund the payment instead",
            "ORDER_ALREADY_PAID",
            {"order_id": order_id, "status": S.PAID.value},
        )


class OrderNotCancellable(FailedPrecondition):
    def __init__(self, order_id: str, status: OrderStatus) -> None:
        super().__init__(
            f"order {order_id} is {status.value}; only PENDING or RESERVED orders can be cancelled",
            "ORDER_NOT_CANCELLABLE",
            {"order_id": order_id, "status": status.value},
        )


@dataclass(frozen=True, slots=True)
class LineItem:
    sku: str
    quantity: int
    unit_price: Money

    @property
    def line_total(self) -> int:
        # Python ints are exact at any size; the range is checked on the sum.
        return self.quantity * self.unit_price.minor_units


def total_minor_units(items: Sequence[LineItem]) -> int:
    """Sum of quantity x unit price, exact (not yet bounded to int64)."""
    return sum(item.line_total for item in items)


def item_violations(items: Sequence[LineItem]) -> list[FieldViolation]:
    """What makes a list of otherwise well-formed items unorderable: none, mixed
    currencies, or a total that is zero or does not fit in int64 minor units."""
    if not items:
        return [FieldViolation("items", "at least one item is required")]
    if len(items) > MAX_ITEMS:
        return [FieldViolation("items", f"at most {MAX_ITEMS} items per order")]
    currency = items[0].unit_price.currency
    mixed = [
        FieldViolation(
            f"items[{i}].unit_price.currency_code",
            f"all items must be in one currency ({currency}), got {item.unit_price.currency}",
        )
        for i, item in enumerate(items)
        if item.unit_price.currency != currency
    ]
    if mixed:
        return mixed
    total = total_minor_units(items)
    if total <= 0:
        return [FieldViolation("items", "the order total must be greater than zero")]
    if total > MAX_MINOR_UNITS:
        return [FieldViolation("items", "the order total does not fit in int64 minor units")]
    return []


@dataclass
class Order:
    order_id: str
    customer_id: str
    items: tuple[LineItem, ...]
    total: Money
    status: OrderStatus = OrderStatus.PENDING
    reservation_id: str = ""
    payment_id: str = ""
    failure_reason: str = ""
    # Written by the store (None until the order is stored): the keyset of ListOrders and
    # the times clients see. No rule here reads them.
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def create(cls, order_id: str, customer_id: str, items: Sequence[LineItem]) -> Order:
        """A new PENDING order; its total is computed here, never taken from the caller."""
        if problems := item_violations(items):
            raise InvalidArgument("the order items are invalid", problems)
        currency = items[0].unit_price.currency
        return cls(order_id, customer_id, tuple(items), Money(currency, total_minor_units(items)))

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    def can(self, trigger: Trigger) -> bool:
        return (self.status, trigger) in TRANSITIONS

    def _move(self, trigger: Trigger) -> bool:
        target = TRANSITIONS.get((self.status, trigger))
        if target is None:
            return False
        self.status = target
        return True

    # Commands: illegal ones are the caller's mistake and are refused with a reason.

    def cancel(self, reason: str = "") -> bool:
        """PENDING/RESERVED → CANCELLED. True if it changed; False if it already was."""
        if self.status is S.CANCELLED:
            return False  # cancelling is idempotent by nature: no second event
        if self.status is S.PAID:
            raise OrderAlreadyPaid(self.order_id)
        if not self._move(Trigger.CANCEL):
            raise OrderNotCancellable(self.order_id, self.status)
        self.failure_reason = reason or DEFAULT_CANCEL_REASON
        return True

    # Events: what already happened elsewhere. A late or out-of-order one returns False.

    def credits_reserved(self, reservation_id: str) -> bool:
        if not self._move(Trigger.CREDITS_RESERVED):
            return False
        self.reservation_id = reservation_id
        return True

    def reservation_failed(self, reason: str) -> bool:
        if not self._move(Trigger.RESERVATION_FAILED):
            return False
        self.failure_reason = reason
        return True

    def reservation_expired(self, reservation_id: str) -> bool:
        # An expiry of some other hold (there is only one per order) is not ours to apply.
        if reservation_id != self.reservation_id or not self._move(Trigger.RESERVATION_EXPIRED):
            return False
        self.failure_reason = EXPIRED_REASON
        return True

    def payment_succeeded(self, payment_id: str) -> bool:
        if not self._move(Trigger.PAYMENT_SUCCEEDED):
            return False
        self.payment_id = payment_id
        return True

    def payment_failed(self, payment_id: str, error_code: str) -> bool:
        if not self._move(Trigger.PAYMENT_FAILED):
            return False
        self.payment_id = payment_id
        self.failure_reason = error_code
        return True

    def fully_refunded(self, payment_id: str) -> bool:
        # A refund of another payment than the one that paid this order is not ours.
        if payment_id != self.payment_id:
            return False
        return self._move(Trigger.FULLY_REFUNDED)
