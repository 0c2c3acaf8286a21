"""Payment's saga handler (orders.cancelled) and the compensation it leads to, against an
in-memory unit of work: a payment that got through after its order was cancelled is refunded
once, for what is left of it, and nothing else is ever refunded (the same code runs on
PostgreSQL in tests/integration and under faults in the chaos suite's scenario 8)."""

from __future__ import annotations

import uuid

import pytest

from services.common.events import new_event
from services.common.money import Money
from services.payment.domain.model import Payment, PaymentMethod, PaymentStatus, Refund
from services.payment.service_layer import compensation
from shop.order.v1 import events_pb2 as order_events
from tests.ids import new_id
from tests.unit.fakes.units_of_work import FakePaymentUnitOfWork

S = PaymentStatus


class Ledger:
    """One order's payment in a fake unit of work."""

    def __init__(self) -> None:
        self.uow = FakePaymentUnitOfWork()
        self.order_id = new_id()

    def pay(self, status: PaymentStatus, amount: int = 3_000, refunded: int = 0) -> Payment:
        payment = Payment(
            payment_id=new_id(),
            order_id=self.order_id,
            customer_id=new_id(),
            reservation_id=new_id(),
            amount=Money("USD", amount),
            method=PaymentMethod.CREDIT_CARD,
            status=status,
            refunded=refunded,
        )
        self.uow.payments.rows[payment.payment_id] = payment
        return payment

    async def cancelled(self, order_id: str | None = None, reason: str = "CHANGED_MIND") -> None:
        event = new_event(
            order_events.OrderCancelled,
            order_id=self.order_id if order_id is None else order_id,
            customer_id=new_id(),
            reason=reason,
        )
        await self.uow.apply(compensation.note_cancelled_order, event)

    async def compensate(self) -> tuple[Refund, Payment] | None:
        result: tuple[Refund, Payment] | None = await self.uow.apply(
            compensation.record_refund, self.order_id
        )
        return result

    async def refunded_by_hand(self, payment: Payment, minor_units: int) -> None:
        """A RefundPayment call's refund of `payment`, recorded and still at the gateway."""
        refund = Refund(
            refund_id=new_id(),
            payment_id=payment.payment_id,
            amount=Money("USD", minor_units),
            reason="by hand",
            request_id=new_id(),
        )
        await self.uow.refunds.add(refund, b"caller")

    def refunds(self) -> list[Refund]:
        return [refund for refund, _ in self.uow.refunds.rows.values()]


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


async def test_a_cancel_is_noted_once_whatever_the_redeliveries(ledger: Ledger) -> None:
    await ledger.cancelled(reason="FIRST")
    await ledger.cancelled(reason="AGAIN")
    assert ledger.uow.cancelled_orders.reasons == {ledger.order_id: "FIRST"}
    assert ledger.uow.events == []  # noting has no effect of its own


async def test_a_cancel_naming_no_valid_order_is_ignored(ledger: Ledger) -> None:
    await ledger.cancelled(order_id="not-a-uuid")
    assert ledger.uow.cancelled_orders.reasons == {}


async def test_a_payment_that_got_through_is_refunded_in_full_once(ledger: Ledger) -> None:
    payment = ledger.pay(S.SUCCEEDED)
    await ledger.cancelled()
    recorded = await ledger.compensate()
    assert recorded is not None
    refund, paid = recorded
    assert paid.payment_id == payment.payment_id
    assert refund.amount == Money("USD", 3_000)
    assert refund.reason.startswith("ORDER_CANCELLED")
    assert await ledger.uow.cancelled_orders.refund_of(ledger.order_id) == refund.refund_id

    assert await ledger.compensate() is None  # the job again, or another replica's
    assert len(ledger.refunds()) == 1


async def test_only_what_is_left_is_refunded(ledger: Ledger) -> None:
    payment = ledger.pay(S.PARTIALLY_REFUNDED, amount=3_000, refunded=1_000)
    await ledger.refunded_by_hand(payment, 500)  # still at the gateway
    recorded = await ledger.compensate()
    assert recorded is not None
    assert recorded[0].amount == Money("USD", 1_500)


@pytest.mark.parametrize("status", [S.PENDING, S.FAILED, S.REFUNDED], ids=str)
async def test_nothing_is_refunded_that_was_not_taken_or_is_given_back(
    ledger: Ledger, status: PaymentStatus
) -> None:
    ledger.pay(status, refunded=3_000 if status is S.REFUNDED else 0)
    assert await ledger.compensate() is None
    assert ledger.refunds() == []


async def test_a_payment_refunded_by_hand_in_full_is_left_alone(ledger: Ledger) -> None:
    payment = ledger.pay(S.SUCCEEDED)
    await ledger.refunded_by_hand(payment, 3_000)
    assert await ledger.compensate() is None
    assert len(ledger.refunds()) == 1


async def test_an_order_without_a_payment_has_nothing_to_refund(ledger: Ledger) -> None:
    await ledger.cancelled()
    assert await ledger.compensate() is None
    assert ledger.refunds() == []


async def test_each_compensating_refund_has_a_key_nobody_else_knows(ledger: Ledger) -> None:
    ledger.pay(S.SUCCEEDED)
    other = Ledger()
    other.pay(S.SUCCEEDED)
    first, second = await ledger.compensate(), await other.compensate()
    assert first is not None
    assert second is not None
    keys = {first[0].request_id, second[0].request_id}
    assert len(keys) == 2
    assert all(str(uuid.UUID(key)) == key for key in keys)
