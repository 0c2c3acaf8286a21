"""Every Credit saga handler, each legal and illegal step, late and duplicate events: against
an in-memory unit of work, in milliseconds (the same handlers run on PostgreSQL in
tests/integration/test_credit_saga.py and end to end in tests/e2e)."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.events import new_event
from services.common.inbox import PoisonEvent
from services.common.money import Money
from services.credit.domain.reservation import ReservationState
from services.credit.service_layer import saga
from shop.common.v1 import money_pb2
from shop.credit.v1 import events_pb2 as credit_events
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events
from tests.ids import new_id
from tests.unit.fakes.units_of_work import FakeCreditUnitOfWork

TTL = 900


def usd(minor_units: int, currency: str = "USD") -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, minor_units=minor_units)


class Wallet:
    """One customer's wallet in a fake unit of work, driven by events."""

    def __init__(self) -> None:
        self.uow = FakeCreditUnitOfWork()
        self.customer = new_id()

    async def top_up(self, minor_units: int, currency: str = "USD") -> None:
        account = await self.uow.accounts.get_or_open(self.customer, currency)
        account.top_up(Money(currency, minor_units))
        await self.uow.accounts.save(account)

    async def apply(self, handler: Any, event: Any) -> Any:
        return await self.uow.apply(handler, event)

    async def created(self, minor_units: int, currency: str = "USD", order_id: str = "") -> str:
        order_id = order_id or new_id()
        event = new_event(
            order_events.OrderCreated,
            order_id=order_id,
            customer_id=self.customer,
            total=usd(minor_units, currency),
        )
        await self.apply(lambda uow, e: saga.reserve_for_order(uow, e, TTL), event)
        return order_id

    async def cancelled(self, order_id: str) -> None:
        event = new_event(order_events.OrderCancelled, order_id=order_id, customer_id=self.customer)
        await self.apply(saga.release_for_cancelled_order, event)

    def payment(self, cls: Any, order_id: str, payment_id: str = "", **fields: Any) -> Any:
        return new_event(
            cls,
            payment_id=payment_id or new_id(),
            order_id=order_id,
            customer_id=self.customer,
            amount=usd(fields.pop("minor_units", 1)),
            **fields,
        )

    async def paid(self, order_id: str, minor_units: int, payment_id: str = "") -> str:
        event = self.payment(
            payment_events.PaymentSucceeded, order_id, payment_id, minor_units=minor_units
        )
        await self.apply(saga.capture_for_payment, event)
        return str(event.payment_id)

    async def refunded(
        self, order_id: str, payment_id: str, minor_units: int, refund_id: str = ""
    ) -> None:
        event = self.payment(
            payment_events.PaymentRefunded,
            order_id,
            payment_id,
            minor_units=minor_units,
            refund_id=refund_id or new_id(),
        )
        await self.apply(saga.refund, event)

    def balance(self) -> tuple[int, int, int]:
        a = self.uow.accounts.rows[self.customer]
        assert a.is_balanced
        return (a.available, a.reserved, a.spent)

    async def hold(self, order_id: str) -> Any:
        return await self.uow.reservations.for_order(order_id)

    def emitted(self) -> list[str]:
        return [type(e).__name__ for e in self.uow.events]


@pytest.fixture
def wallet() -> Wallet:
    return Wallet()


# orders.created ─────────────────────────────────────────────────────────────────────────────


async def test_an_order_holds_its_total(wallet: Wallet) -> None:
    await wallet.top_up(5_000)
    order = await wallet.created(3_000)
    assert wallet.balance() == (2_000, 3_000, 0)
    hold = await wallet.hold(order)
    assert (hold.state, hold.amount) == (ReservationState.ACTIVE, Money("USD", 3_000))
    (reserved,) = wallet.uow.events
    assert isinstance(reserved, credit_events.CreditsReserved)
    assert reserved.reservation_id == hold.reservation_id


@pytest.mark.parametrize(
    ("top_up", "currency", "reason"),
    [
        (None, "USD", "ACCOUNT_NOT_FOUND"),
        (1_000, "USD", "INSUFFICIENT_CREDITS"),
        (9_000, "EUR", "CURRENCY_MISMATCH"),
    ],
)
async def test_an_order_that_cannot_be_held_is_answered_with_the_reason(
    wallet: Wallet, top_up: int | None, currency: str, reason: str
) -> None:
    if top_up is not None:
        await wallet.top_up(top_up)
    order = await wallet.created(3_000, currency)
    assert await wallet.hold(order) is None
    (failed,) = wallet.uow.events
    assert isinstance(failed, credit_events.CreditReservationFailed)
    assert (failed.order_id, failed.reason) == (order, reason)


async def test_a_repeated_orders_created_holds_once(wallet: Wallet) -> None:
    await wallet.top_up(5_000)
    order = await wallet.created(3_000)
    await wallet.created(3_000, order_id=order)
    assert wallet.balance() == (2_000, 3_000, 0)
    assert wallet.emitted() == ["CreditsReserved"]


async def test_an_order_cancelled_before_its_created_is_never_held(wallet: Wallet) -> None:
    await wallet.top_up(5_000)
    order = new_id()
    await wallet.cancelled(order)
    await wallet.created(3_000, order_id=order)
    assert await wallet.hold(order) is None
    assert wallet.balance() == (5_000, 0, 0)
    assert wallet.emitted() == []


# releases ───────────────────────────────────────────────────────────────────────────────────


async def test_a_cancel_releases_the_hold(wallet: Wallet) -> None:
    await wallet.top_up(5_000)
    order = await wallet.created(3_000)
    await wallet.cancelled(order)
    await wallet.cancelled(order)  # a repeat: nothing more
    assert wallet.balance() == (5_000, 0, 0)
    hold = await wallet.hold(order)
    assert (hold.state, hold.release_reason) == (ReservationState.RELEASED, "ORDER_CANCELLED")
    assert wallet.emitted() == ["CreditsReserved", "CreditsReleased"]


async def test_a_failed_payment_releases_the_hold(wallet: Wallet) -> None:
    await wallet.top_up(5_000)
    order = await wallet.created(3_000)
    failed = wallet.payment(payment_events.PaymentFailed, order, minor_units=3_000)
    await wallet.apply(saga.release_for_failed_payment, failed)
    assert wallet.balance() == (5_000, 0, 0)
    assert (await wallet.hold(order)).release_reason == "PAYMENT_FAILED"


async def test_a_late_release_of_a_captured_hold_changes_nothing(wallet: Wallet) -> None:
    await wallet.top_up(5_000)
    order = await wallet.created(3_000)
    payment = await wallet.paid(order, 3_000)
    await wallet.cancelled(order)
    failed = wallet.payment(payment_events.PaymentFailed, order, payment, minor_units=3_000)
    await wallet.apply(saga.release_for_failed_payment, failed)
    assert wallet.balance() == (2_000, 0, 3_000)
    assert (await wallet.hold(order)).state is ReservationState.CAPTURED


async def test_a_release_naming_another_customer_is_poison_and_changes_nothing(
    wallet: Wallet,
) -> None:
    await wallet.top_up(5_000)
    order = await wallet.created(3_000)
    owner, wallet.customer = wallet.customer, new_id()
    await wallet.top_up(100)
    with pytest.raises(PoisonEvent):
        await wallet.cancelled(order)
    wallet.customer = owner
    assert wallet.balance() == (2_000, 3_000, 0)
    assert order not in wallet.uow.reservations.cancelled_orders  # rolled back with the rest


async def test_an_overdue_hold_expires_once(wallet: Wallet) -> None:
    await wallet.top_up(5_000)
    order = await wallet.created(3_000)
    assert await wallet.uow.reservations.overdue(10) == []  # not yet
    wallet.uow.clock.advance(TTL)
    (due,) = await wallet.uow.reservations.overdue(10)
    assert await wallet.apply(saga.expire, due) is True
    assert await wallet.apply(saga.expire, due) is False  # another replica got there first
    assert wallet.balance() == (5_000, 0, 0)
    assert (await wallet.hold(order)).state is ReservationState.EXPIRED
    assert wallet.emitted() == ["CreditsReserved", "CreditsReleased"]


# captures ───────────────────────────────────────────────────────────────────────────────────


async def test_a_payment_captures_its_hold_once(wallet: Wallet) -> None:
    await wallet.top_up(5_000)
    order = await wallet.created(3_000)
    payment = await wallet.paid(order, 3_000)
    await wallet.paid(order, 3_000, payment)  # the same fact again
    assert wallet.balance() == (2_000, 0, 3_000)
    hold = await wallet.hold(order)
    assert (hold.state, hold.payment_id) == (ReservationState.CAPTURED, payment)
    assert wallet.emitted() == ["CreditsReserved", "CreditsCaptured"]


async def test_a_payment_after_the_release_takes_the_credits_from_available(
    wallet: Wallet,
) -> None:
    await wallet.top_up(5_000)
    order = await wallet.created(3_000)
    await wallet.cancelled(order)
    payment = await wallet.paid(order, 3_000)  # it won at the gateway: the customer paid
    assert wallet.balance() == (2_000, 0, 3_000)
    assert (await wallet.hold(order)).payment_id == payment


async def test_a_payment_after_the_release_short_of_credits_captures_nothing(
    wallet: Wallet,
) -> None:
    await wallet.top_up(3_000)
    order = await wallet.created(3_000)
    await wallet.cancelled(order)
    await wallet.created(3_000)  # another order holds the released credits
    payment = await wallet.paid(order, 3_000)
    assert wallet.balance() == (0, 3_000, 0)
    assert (await wallet.hold(order)).state is ReservationState.RELEASED
    assert wallet.uow.refunds.notes == [("LATE_CAPTURE_SHORT", payment, 3_000)]


async def test_a_payment_for_an_order_without_a_hold_changes_nothing(wallet: Wallet) -> None:
    await wallet.top_up(5_000)
    await wallet.paid(new_id(), 3_000)
    assert wallet.balance() == (5_000, 0, 0)
    assert wallet.emitted() == []


# refunds ────────────────────────────────────────────────────────────────────────────────────


async def test_refunds_give_back_what_the_payment_captured_and_no_more(wallet: Wallet) -> None:
    await wallet.top_up(5_000)
    order = await wallet.created(3_000)
    payment = await wallet.paid(order, 3_000)
    await wallet.refunded(order, payment, 2_000)
    assert wallet.balance() == (4_000, 0, 1_000)
    await wallet.refunded(order, payment, 2_000)  # only 1 000 left of the capture
    assert wallet.balance() == (5_000, 0, 0)
    assert (await wallet.hold(order)).refunded == 3_000
    assert wallet.uow.refunds.notes == [("REFUND_OVER_CAPTURE", payment, 2_000)]
    assert wallet.emitted()[-2:] == ["CreditsRefunded", "CreditsRefunded"]
    assert [e.amount.minor_units for e in wallet.uow.events[-2:]] == [2_000, 1_000]  # type: ignore[attr-defined]


async def test_the_same_refund_again_gives_nothing_more(wallet: Wallet) -> None:
    await wallet.top_up(5_000)
    order = await wallet.created(3_000)
    payment = await wallet.paid(order, 3_000)
    refund = new_id()
    await wallet.refunded(order, payment, 1_000, refund)
    await wallet.refunded(order, payment, 1_000, refund)  # republished, new event id
    assert wallet.balance() == (3_000, 0, 2_000)


async def test_a_refund_of_a_payment_that_captured_nothing_gives_nothing(wallet: Wallet) -> None:
    await wallet.top_up(3_000)
    order = await wallet.created(3_000)
    await wallet.cancelled(order)
    spender = await wallet.created(3_000)
    await wallet.paid(spender, 3_000)
    late = await wallet.paid(order, 3_000)  # short: nothing captured
    await wallet.refunded(order, late, 3_000)  # Payment's automatic refund of it
    await wallet.refunded(spender, new_id(), 3_000)  # a payment that never captured
    assert wallet.balance() == (0, 0, 3_000)
    assert [kind for kind, _, _ in wallet.uow.refunds.notes] == [
        "LATE_CAPTURE_SHORT",
        "REFUND_NOT_CAPTURED",
        "REFUND_NOT_CAPTURED",
    ]


async def test_a_refund_ahead_of_its_capture_waits_and_changes_nothing(wallet: Wallet) -> None:
    await wallet.top_up(3_000)
    order = await wallet.created(3_000)
    payment = new_id()
    with pytest.raises(saga.CaptureNotYetApplied):
        await wallet.refunded(order, payment, 3_000)
    assert wallet.uow.refunds.applied_rows == {}
    await wallet.paid(order, 3_000, payment)
    await wallet.refunded(order, payment, 3_000)
    assert wallet.balance() == (3_000, 0, 0)


async def test_a_refund_for_a_customer_without_an_account_gives_nothing(wallet: Wallet) -> None:
    await wallet.refunded(new_id(), new_id(), 3_000)
    assert [kind for kind, _, _ in wallet.uow.refunds.notes] == ["REFUND_NOT_CAPTURED"]
    assert wallet.customer not in wallet.uow.accounts.rows


# Every event that moves a hold, from every state of the hold: what it becomes, what the
# account holds after, what is announced; the same event again changes nothing more.
# (A top-up of 5,000 and an order of 3,000: available, reserved, spent.)

HELD, TAKEN, GIVEN_BACK = (2_000, 3_000, 0), (2_000, 0, 3_000), (5_000, 0, 0)
A, C, R, E = (
    ReservationState.ACTIVE,
    ReservationState.CAPTURED,
    ReservationState.RELEASED,
    ReservationState.EXPIRED,
)
# event → {state before: (state after, balance after, events announced)}
OUTCOMES: dict[
    str, dict[ReservationState, tuple[ReservationState, tuple[int, int, int], list[str]]]
] = {
    "orders.cancelled": {
        A: (R, GIVEN_BACK, ["CreditsReleased"]),
        C: (C, TAKEN, []),
        R: (R, GIVEN_BACK, []),
        E: (E, GIVEN_BACK, []),
    },
    "payments.failed": {
        A: (R, GIVEN_BACK, ["CreditsReleased"]),
        C: (C, TAKEN, []),
        R: (R, GIVEN_BACK, []),
        E: (E, GIVEN_BACK, []),
    },
    "payments.succeeded": {
        A: (C, TAKEN, ["CreditsCaptured"]),
        C: (C, TAKEN, []),
        R: (C, TAKEN, ["CreditsCaptured"]),  # the payment won at the gateway: it is taken
        E: (C, TAKEN, ["CreditsCaptured"]),
    },
    "expiry": {
        A: (E, GIVEN_BACK, ["CreditsReleased"]),
        C: (C, TAKEN, []),
        R: (R, GIVEN_BACK, []),
        E: (E, GIVEN_BACK, []),
    },
}


async def _hold_in(wallet: Wallet, state: ReservationState) -> str:
    await wallet.top_up(5_000)
    order = await wallet.created(3_000)
    if state is C:
        await wallet.paid(order, 3_000)
    elif state is R:
        await wallet.cancelled(order)
    elif state is E:
        wallet.uow.clock.advance(TTL + 1)
        (overdue,) = await wallet.uow.reservations.overdue(10)
        assert await wallet.apply(lambda uow, _: saga.expire(uow, overdue), None)
    return order


async def _deliver(wallet: Wallet, event_name: str, order: str, payment_id: str) -> None:
    if event_name == "orders.cancelled":
        await wallet.cancelled(order)
    elif event_name == "payments.failed":
        failed = wallet.payment(payment_events.PaymentFailed, order, payment_id)
        await wallet.apply(saga.release_for_failed_payment, failed)
    elif event_name == "payments.succeeded":
        await wallet.paid(order, 3_000, payment_id)
    else:  # the sweeper, after the hold's time is up
        wallet.uow.clock.advance(TTL + 1)
        hold = await wallet.hold(order)
        await wallet.apply(lambda uow, _: saga.expire(uow, hold), None)


@pytest.mark.parametrize("state", [A, C, R, E], ids=str)
@pytest.mark.parametrize("event_name", list(OUTCOMES))
async def test_each_event_from_each_state_of_the_hold(
    wallet: Wallet, event_name: str, state: ReservationState
) -> None:
    order = await _hold_in(wallet, state)
    assert (await wallet.hold(order)).state is state
    before = len(wallet.emitted())
    after, balance, announced = OUTCOMES[event_name][state]
    payment_id = new_id()

    await _deliver(wallet, event_name, order, payment_id)
    assert (await wallet.hold(order)).state is after
    assert wallet.balance() == balance
    assert wallet.emitted()[before:] == announced

    await _deliver(wallet, event_name, order, payment_id)  # redelivered
    assert (await wallet.hold(order)).state is after
    assert wallet.balance() == balance
    assert wallet.emitted()[before:] == announced
