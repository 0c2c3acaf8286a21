"""A hold on a customer's credits for one order, and its lifecycle.

    ACTIVE ──capture──▶ CAPTURED
       ├────release───▶ RELEASED   (payment failed, order cancelled)
       └────expire────▶ EXPIRED    (outlived expires_at)

Only ACTIVE moves; the other states are terminal (a CAPTURED hold still counts the refunds
given back against it, never more than it captured). Pure rules, no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from services.common.errors import FailedPrecondition
from services.common.money import Money


class ReservationState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    CAPTURED = "CAPTURED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"


class ReleaseReason(enum.StrEnum):
    PAYMENT_FAILED = "PAYMENT_FAILED"
    ORDER_CANCELLED = "ORDER_CANCELLED"
    EXPIRED = "EXPIRED"


class ReservationNotActive(FailedPrecondition):
    def __init__(self, reservation_id: str, state: ReservationState, action: str) -> None:
        super().__init__(
            f"reservation {reservation_id} is {state.value}; it cannot be {action}",
            "RESERVATION_NOT_ACTIVE",
            {"reservation_id": reservation_id, "state": state.value},
        )


@dataclass
class Reservation:
    reservation_id: str
    customer_id: str
    order_id: str
    amount: Money
    state: ReservationState
    expires_at: datetime
    payment_id: str = ""
    release_reason: str = ""
    refunded: int = 0  # minor units given back by refunds of the capturing payment
    # Written by the store (None until stored): the keyset of ListReservations.
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.state is ReservationState.ACTIVE

    def is_expired_at(self, now: datetime) -> bool:
        return self.is_active and self.expires_at <= now

    def _require_active(self, action: str) -> None:
        if not self.is_active:
            raise ReservationNotActive(self.reservation_id, self.state, action)

    def capture(self, payment_id: str) -> None:
        self._require_active("captured")
        self.state = ReservationState.CAPTURED
        self.payment_id = payment_id

    def release(self, reason: ReleaseReason) -> None:
        self._require_active("released")
        self.state = ReservationState.RELEASED
        self.release_reason = reason.value

    def expire(self) -> None:
        self._require_active("expired")
        self.state = ReservationState.EXPIRED
        self.release_reason = ReleaseReason.EXPIRED.value

    def capture_after_release(self, payment_id: str) -> None:
        """A payment that succeeded after its hold was released (it raced an expiry or a
        cancel): the money was taken, so the credits must be too, straight from available."""
        if self.state not in (ReservationState.RELEASED, ReservationState.EXPIRED):
            raise ReservationNotActive(self.reservation_id, self.state, "captured late")
        self.state = ReservationState.CAPTURED
        self.payment_id = payment_id

    def is_captured_by(self, payment_id: str) -> bool:
        return self.state is ReservationState.CAPTURED and self.payment_id == payment_id

    def give_back(self, requested: Money) -> Money:
        """Take a refund of the capturing payment against this hold: what it gives back,
        never more than the capture has left (nothing in another currency)."""
        if (
            self.state is not ReservationState.CAPTURED
            or requested.currency != self.amount.currency
        ):
            return Money(self.amount.currency, 0)
        given = max(0, min(requested.minor_units, self.amount.minor_units - self.refunded))
        self.refunded += given
        return Money(self.amount.currency, given)
