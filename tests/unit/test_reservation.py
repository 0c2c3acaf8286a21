"""The hold's lifecycle: only ACTIVE moves; every other state is terminal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.money import Money
from services.credit.domain.reservation import (
    ReleaseReason,
    Reservation,
    ReservationNotActive,
    ReservationState,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def hold(state: ReservationState = ReservationState.ACTIVE) -> Reservation:
    return Reservation(
        reservation_id="r1",
        customer_id="c1",
        order_id="o1",
        amount=Money("USD", 1500),
        state=state,
        expires_at=NOW + timedelta(minutes=15),
    )


def test_capture_records_the_payment() -> None:
    h = hold()
    h.capture("p1")
    assert (h.state, h.payment_id) == (ReservationState.CAPTURED, "p1")


@pytest.mark.parametrize("reason", list(ReleaseReason))
def test_release_records_why(reason: ReleaseReason) -> None:
    h = hold()
    h.release(reason)
    assert (h.state, h.release_reason) == (ReservationState.RELEASED, reason.value)


def test_expire() -> None:
    h = hold()
    h.expire()
    assert (h.state, h.release_reason) == (ReservationState.EXPIRED, "EXPIRED")


TERMINAL = [ReservationState.CAPTURED, ReservationState.RELEASED, ReservationState.EXPIRED]


@pytest.mark.parametrize("state", TERMINAL)
@pytest.mark.parametrize("action", ["capture", "release", "expire"])
def test_terminal_states_never_move(state: ReservationState, action: str) -> None:
    h = hold(state)
    with pytest.raises(ReservationNotActive) as refused:
        if action == "capture":
            h.capture("p1")
        elif action == "release":
            h.release(ReleaseReason.ORDER_CANCELLED)
        else:
            h.expire()
    assert refused.value.reason == "RESERVATION_NOT_ACTIVE"
    assert h.state is state


@pytest.mark.parametrize("state", [ReservationState.RELEASED, ReservationState.EXPIRED])
def test_a_payment_that_won_after_release_is_captured_late(state: ReservationState) -> None:
    h = hold(state)
    h.capture_after_release("p1")
    assert (h.state, h.payment_id) == (ReservationState.CAPTURED, "p1")


@pytest.mark.parametrize("state", [ReservationState.ACTIVE, ReservationState.CAPTURED])
def test_late_capture_only_after_a_release(state: ReservationState) -> None:
    with pytest.raises(ReservationNotActive):
        hold(state).capture_after_release("p1")


def test_expiry_is_judged_against_the_clock() -> None:
    h = hold()
    assert not h.is_expired_at(NOW)
    assert h.is_expired_at(NOW + timedelta(minutes=15))
    h.capture("p1")
    assert not h.is_expired_at(NOW + timedelta(days=1))  # only active holds expire
