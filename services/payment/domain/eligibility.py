"""Is this order payable, with this hold, by this customer, for this amount? Pure rules over
snapshots of what Order and Credit told us (ProcessPayment steps 3 and 4)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
)
from services.common.money import Money

# Order's and Credit's states by their short names (the adapters strip the contract's enum
# prefixes): this module knows no transport.
PAYABLE_ORDER_STATUS = "RESERVED"
CANCELLED_ORDER_STATUS = "CANCELLED"
ACTIVE_HOLD_STATE = "ACTIVE"
EXPIRED_HOLD_STATE = "EXPIRED"


@dataclass(frozen=True, slots=True)
class OrderSnapshot:
    order_id: str
    customer_id: str
    total: Money
    status: str  # Order's status, e.g. RESERVED
    reservation_id: str


@dataclass(frozen=True, slots=True)
class HoldSnapshot:
    reservation_id: str
    customer_id: str
    order_id: str
    amount: Money
    state: str  # the hold's state, e.g. ACTIVE
    expires_at: datetime | None


class OrderNotOwned(PermissionDenied):
    def __init__(self, order_id: str) -> None:
        super().__init__(
            f"order {order_id} does not belong to this customer",
            "ORDER_NOT_OWNED",
            {"order_id": order_id},
        )


class AmountMismatch(InvalidArgument):
    def __init__(self, requested: Money, total: Money) -> None:
        super().__init__(
            f"the amount {requested} does not match the order total {total}",
            [FieldViolation("amount", f"must equal the order total {total}")],
            "AMOUNT_MISMATCH",
            {
                "order_total_currency": total.currency,
                "order_total_minor_units": str(total.minor_units),
            },
        )


class OrderNotPayable(FailedPrecondition):
    def __init__(self, order_id: str, status: str) -> None:
        super().__init__(
            f"order {order_id} is {status}; only a RESERVED order can be paid",
            "ORDER_NOT_PAYABLE",
            # ErrorInfo metadata carries the contract's enum names, as GetOrder shows them
            {"order_id": order_id, "order_status": f"ORDER_STATUS_{status}"},
        )


class ReservationNotFound(FailedPrecondition):
    def __init__(self, reservation_id: str) -> None:
        super().__init__(
            f"reservation {reservation_id} does not exist",
            "RESERVATION_NOT_FOUND",
            {"reservation_id": reservation_id},
        )


class ReservationExpired(FailedPrecondition):
    def __init__(self, reservation_id: str) -> None:
        super().__init__(
            f"reservation {reservation_id} has expired",
            "RESERVATION_EXPIRED",
            {"reservation_id": reservation_id},
        )


class ReservationNotActive(FailedPrecondition):
    def __init__(self, reservation_id: str, state: str) -> None:
        super().__init__(
            f"reservation {reservation_id} is {state}; only an ACTIVE hold can be paid with",
            "RESERVATION_NOT_ACTIVE",
            {"reservation_id": reservation_id, "reservation_state": f"RESERVATION_STATE_{state}"},
        )


class ReservationMismatch(FailedPrecondition):
    def __init__(self, reservation_id: str) -> None:
        super().__init__(
            f"reservation {reservation_id} is not this customer's hold for this order",
            "RESERVATION_MISMATCH",
            {"reservation_id": reservation_id},
        )


def check_order(order: OrderSnapshot, customer_id: str, amount: Money) -> None:
    """Ownership first (a stranger learns nothing more), then the amount, then the state."""
    if order.customer_id != customer_id:
        raise OrderNotOwned(order.order_id)
    if amount != order.total:
        raise AmountMismatch(amount, order.total)
    if order.status != PAYABLE_ORDER_STATUS:
        raise OrderNotPayable(order.order_id, order.status)


def check_hold(hold: HoldSnapshot, customer_id: str, order_id: str, now: datetime) -> None:
    # Whose hold it is comes first: another customer's hold reveals nothing about its state.
    if hold.customer_id != customer_id or hold.order_id != order_id:
        raise ReservationMismatch(hold.reservation_id)
    if hold.state == EXPIRED_HOLD_STATE:
        raise ReservationExpired(hold.reservation_id)
    if hold.state != ACTIVE_HOLD_STATE:
        raise ReservationNotActive(hold.reservation_id, hold.state)
    if hold.expires_at is not None and hold.expires_at <= now:
        # ACTIVE but past its expiry: the sweeper has not run yet; it is as good as gone.
        raise ReservationExpired(hold.reservation_id)
