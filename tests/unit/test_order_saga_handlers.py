"""Every Order saga handler, each legal and illegal transition, late and duplicate events:
against an in-memory unit of work, without servers (the same handlers run end to end in
tests/e2e)."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.events import new_event
from services.common.money import Money
from services.order.domain.model import TRANSITIONS, LineItem, OrderStatus, Trigger
from services.order.service_layer import handlers, saga
from shop.common.v1 import money_pb2
from shop.credit.v1 import events_pb2 as credit_events
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events
from tests.ids import new_id
from tests.unit.fakes.units_of_work import FakeOrderUnitOfWork

S = OrderStatus
USD = money_pb2.Money(currency_code="USD", minor_units=3_000)


class Orders:
    def __init__(self) -> None:
        self.uow = FakeOrderUnitOfWork()
        self.customer = new_id()

    async def created(self) -> str:
        items = [LineItem("BOOK-42", 2, Money("USD", 1_500))]
        order = await self.uow.apply(
            lambda uow, _: handlers.create_order(uow, self.customer, items), None
        )
        return str(order.order_id)

    def event(self, cls: Any, order_id: str, **fields: Any) -> Any:
        return new_event(cls, order_id=order_id, customer_id=self.customer, **fields)

    async def on(self, handler: Any, event: Any) -> None:
        await self.uow.apply(handler, event)

    async def reserved(self, order_id: str) -> str:
        hold = new_id()
        await self.on(
            saga.on_credits_reserved,
            self.event(credit_events.CreditsReserved, order_id, reservation_id=hold, amount=USD),
        )
        return hold

    async def paid(self, order_id: str) -> str:
        payment = new_id()
        await self.on(
            saga.on_payment_succeeded,
            self.event(payment_events.PaymentSucceeded, order_id, payment_id=payment, amount=USD),
        )
        return payment

    def status(self, order_id: str) -> OrderStatus:
        return self.uow.orders.rows[order_id].status

    def emitted(self) -> list[str]:
        return [type(e).__name__ for e in self.uow.events]


@pytest.fixture
def orders() -> Orders:
    return Orders()


async def test_a_created_order_is_pending_and_announced(orders: Orders) -> None:
    order = await orders.created()
    assert orders.status(order) is S.PENDING
    (created,) = orders.uow.events
    assert isinstance(created, order_events.OrderCreated)
    assert created.total.minor_units == 3_000


async def test_the_happy_path_reserved_paid_refunded(orders: Orders) -> None:
    order = await orders.created()
    hold = await orders.reserved(order)
    assert orders.status(order) is S.RESERVED
    assert orders.uow.orders.rows[order].reservation_id == hold
    payment = await orders.paid(order)
    assert orders.status(order) is S.PAID
    partial = orders.event(
        payment_events.PaymentRefunded, order, payment_id=payment, refund_id=new_id(), amount=USD
    )
    await orders.on(saga.on_payment_refunded, partial)
    assert orders.status(order) is S.PAID  # a partial refund leaves it PAID
    full = orders.event(
        payment_events.PaymentRefunded,
        order,
        payment_id=payment,
        refund_id=new_id(),
        amount=USD,
        fully_refunded=True,
    )
    await orders.on(saga.on_payment_refunded, full)
    assert orders.status(order) is S.REFUNDED


async def test_a_failed_reservation_rejects_the_order(orders: Orders) -> None:
    order = await orders.created()
    failed = orders.event(
        credit_events.CreditReservationFailed, order, amount=USD, reason="INSUFFICIENT_CREDITS"
    )
    await orders.on(saga.on_reservation_failed, failed)
    assert orders.status(order) is S.REJECTED
    assert orders.uow.orders.rows[order].failure_reason == "INSUFFICIENT_CREDITS"


async def test_a_failed_payment_fails_the_order(orders: Orders) -> None:
    order = await orders.created()
    await orders.reserved(order)
    failed = orders.event(
        payment_events.PaymentFailed,
        order,
        payment_id=new_id(),
        amount=USD,
        error_code="CARD_DECLINED",
    )
    await orders.on(saga.on_payment_failed, failed)
    assert orders.status(order) is S.PAYMENT_FAILED
    assert orders.uow.orders.rows[order].failure_reason == "CARD_DECLINED"


async def test_an_expired_hold_cancels_the_order_and_announces_it(orders: Orders) -> None:
    order = await orders.created()
    hold = await orders.reserved(order)
    expired = orders.event(
        credit_events.CreditsReleased, order, reservation_id=hold, amount=USD, reason="EXPIRED"
    )
    await orders.on(saga.on_credits_released, expired)
    await orders.on(saga.on_credits_released, expired)  # a duplicate: announced once
    assert orders.status(order) is S.CANCELLED
    assert orders.emitted() == ["OrderCreated", "OrderCancelled"]


@pytest.mark.parametrize("reason", ["ORDER_CANCELLED", "PAYMENT_FAILED"])
async def test_other_releases_leave_the_order_to_what_caused_them(
    orders: Orders, reason: str
) -> None:
    order = await orders.created()
    hold = await orders.reserved(order)
    released = orders.event(
        credit_events.CreditsReleased, order, reservation_id=hold, amount=USD, reason=reason
    )
    await orders.on(saga.on_credits_released, released)
    assert orders.status(order) is S.RESERVED


async def test_late_events_never_move_a_finished_order(orders: Orders) -> None:
    order = await orders.created()
    await orders.reserved(order)
    payment = await orders.paid(order)
    late = [
        (saga.on_credits_reserved, credit_events.CreditsReserved, {"reservation_id": new_id()}),
        (
            saga.on_reservation_failed,
            credit_events.CreditReservationFailed,
            {"reason": "INSUFFICIENT_CREDITS"},
        ),
        (
            saga.on_credits_released,
            credit_events.CreditsReleased,
            {"reservation_id": new_id(), "reason": "EXPIRED"},
        ),
        (
            saga.on_payment_failed,
            payment_events.PaymentFailed,
            {"payment_id": payment, "error_code": "CARD_DECLINED"},
        ),
        (saga.on_payment_succeeded, payment_events.PaymentSucceeded, {"payment_id": new_id()}),
    ]
    for handler, cls, fields in late:
        await orders.on(handler, orders.event(cls, order, amount=USD, **fields))
    assert orders.status(order) is S.PAID
    assert orders.uow.orders.rows[order].payment_id == payment
    assert orders.emitted() == ["OrderCreated"]


async def test_a_payment_after_the_cancel_leaves_the_order_cancelled(orders: Orders) -> None:
    order = await orders.created()
    hold = await orders.reserved(order)
    expired = orders.event(
        credit_events.CreditsReleased, order, reservation_id=hold, amount=USD, reason="EXPIRED"
    )
    await orders.on(saga.on_credits_released, expired)
    await orders.paid(order)  # Payment refunds it on the orders.cancelled announced above
    assert orders.status(order) is S.CANCELLED


async def test_events_for_unknown_or_malformed_orders_are_ignored(orders: Orders) -> None:
    for order_id in (new_id(), "not-a-uuid"):
        await orders.reserved(order_id)
        await orders.paid(order_id)
    assert orders.uow.orders.rows == {}
    assert orders.uow.events == []


# Every saga event from every status: the handler moves the order exactly as the status
# graph says (services/order/domain/model.py TRANSITIONS) and leaves it alone otherwise; the
# same event delivered twice changes nothing the second time.

HOLD, PAYMENT = new_id(), new_id()
EVENTS: dict[Trigger, tuple[Any, Any, dict[str, Any]]] = {
    Trigger.CREDITS_RESERVED: (
        saga.on_credits_reserved,
        credit_events.CreditsReserved,
        {"reservation_id": HOLD},
    ),
    Trigger.RESERVATION_FAILED: (
        saga.on_reservation_failed,
        credit_events.CreditReservationFailed,
        {"reason": "INSUFFICIENT_CREDITS"},
    ),
    Trigger.RESERVATION_EXPIRED: (
        saga.on_credits_released,
        credit_events.CreditsReleased,
        {"reservation_id": HOLD, "reason": "EXPIRED"},
    ),
    Trigger.PAYMENT_SUCCEEDED: (
        saga.on_payment_succeeded,
        payment_events.PaymentSucceeded,
        {"payment_id": PAYMENT},
    ),
    Trigger.PAYMENT_FAILED: (
        saga.on_payment_failed,
        payment_events.PaymentFailed,
        {"payment_id": PAYMENT, "error_code": "CARD_DECLINED"},
    ),
    Trigger.FULLY_REFUNDED: (
        saga.on_payment_refunded,
        payment_events.PaymentRefunded,
        {"payment_id": PAYMENT, "refund_id": new_id(), "fully_refunded": True},
    ),
}


def test_the_table_covers_every_event_trigger() -> None:
    assert set(EVENTS) == set(Trigger) - {Trigger.CANCEL}  # CancelOrder is a command


@pytest.mark.parametrize("trigger", list(EVENTS), ids=str)
@pytest.mark.parametrize("status", list(OrderStatus), ids=str)
async def test_each_event_from_each_status_moves_the_order_as_the_graph_says(
    orders: Orders, status: OrderStatus, trigger: Trigger
) -> None:
    order_id = await orders.created()
    row = orders.uow.orders.rows[order_id]
    row.status, row.reservation_id, row.payment_id = status, HOLD, PAYMENT
    handler, cls, fields = EVENTS[trigger]
    event = orders.event(cls, order_id, amount=USD, **fields)
    expected = TRANSITIONS.get((status, trigger), status)
    announced = ["OrderCreated"]
    if expected is not status and trigger is Trigger.RESERVATION_EXPIRED:
        announced.append("OrderCancelled")  # Payment refunds a payment that got through

    await orders.on(handler, event)
    assert orders.status(order_id) is expected
    assert orders.emitted() == announced

    await orders.on(handler, event)  # redelivered
    assert orders.status(order_id) is expected
    assert orders.emitted() == announced
