"""Payment use cases against real PostgreSQL, with fakes for Order and Credit (their
services are someone else's; the saga end to end is in tests/e2e)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.errors import DomainError, IdempotencyKeyReused, Unavailable
from services.common.grpc_client import Deadline
from services.common.money import Money
from services.payment.adapters.simulator import SimulatedGateway
from services.payment.adapters.unit_of_work import SqlPaymentUnitOfWork
from services.payment.domain.eligibility import HoldSnapshot, OrderSnapshot
from services.payment.domain.gateway import GatewayUnavailable
from services.payment.domain.model import (
    ChargeOutcome,
    Payment,
    PaymentMethod,
    PaymentStatus,
    RefundOutcome,
    RefundStatus,
)
from services.payment.service_layer import (
    compensation,
    errors,
    processing,
    queries,
    recovery,
    refunds,
)
from services.payment.service_layer.dependencies import Dependencies, PollPolicy, RetryPolicy
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2
from tests.ids import new_id

pytestmark = pytest.mark.integration

SOURCE = "/shop/payment"


def usd(minor_units: int) -> Money:
    return Money("USD", minor_units)


async def no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


@dataclass
class FakeOrders:
    orders: dict[str, OrderSnapshot] = field(default_factory=dict)
    calls: int = 0
    error: DomainError | None = None

    async def get_order(self, order_id: str, time_limit: float) -> OrderSnapshot | None:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.orders.get(order_id)


@dataclass
class FakeHolds:
    holds: dict[str, HoldSnapshot] = field(default_factory=dict)

    async def get_reservation(self, reservation_id: str, time_limit: float) -> HoldSnapshot | None:
        return self.holds.get(reservation_id)


class CountingGateway(SimulatedGateway):
    """The simulator, counting charges; `gate` holds every charge until it is set."""

    def __init__(self) -> None:
        super().__init__()
        self.charges = 0
        self.refunds = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def charge(self, payment_id: str, amount: Money, method: PaymentMethod) -> ChargeOutcome:
        self.charges += 1
        await self.gate.wait()
        return await super().charge(payment_id, amount, method)

    async def refund(self, refund_id: str, payment_id: str, amount: Money) -> RefundOutcome:
        self.refunds += 1
        await asyncio.sleep(0.01)  # let concurrent refunds interleave
        return await super().refund(refund_id, payment_id, amount)


@dataclass
class World:
    engine: AsyncEngine
    deps: Dependencies
    orders: FakeOrders
    holds: FakeHolds
    gateway: CountingGateway

    def reserved_order(self, minor_units: int, customer_id: str | None = None) -> OrderSnapshot:
        order = OrderSnapshot(
            order_id=new_id(),
            customer_id=customer_id or new_id(),
            total=usd(minor_units),
            status="RESERVED",
            reservation_id=new_id(),
        )
        self.orders.orders[order.order_id] = order
        self.holds.holds[order.reservation_id] = HoldSnapshot(
            reservation_id=order.reservation_id,
            customer_id=order.customer_id,
            order_id=order.order_id,
            amount=order.total,
            state="ACTIVE",
            expires_at=datetime.now(UTC) + timedelta(minutes=15),
        )
        return order

    def command(self, order: OrderSnapshot, **changes: object) -> processing.ProcessPayment:
        cmd = processing.ProcessPayment(
            order_id=order.order_id,
            customer_id=order.customer_id,
            reservation_id=order.reservation_id,
            amount=order.total,
            method=PaymentMethod.CREDIT_CARD,
        )
        return replace(cmd, **changes)  # type: ignore[arg-type]

    async def pay(self, order: OrderSnapshot, **changes: object) -> Payment:
        return await processing.process_payment(
            self.deps, self.command(order, **changes), Deadline.after(10)
        )

    async def scalar(self, sql: str, **params: object) -> object:
        async with self.engine.connect() as conn:
            return (await conn.execute(text(sql), params)).scalar_one()

    async def events(self, subject: str) -> list[bytes]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT payload FROM outbox WHERE subject = :s ORDER BY seq"), {"s": subject}
            )
            return [bytes(r.payload) for r in rows]


@pytest.fixture
def world(payment_engine: AsyncEngine) -> World:
    orders, holds, gateway = FakeOrders(), FakeHolds(), CountingGateway()
    deps = Dependencies(
        unit_of_work=lambda: SqlPaymentUnitOfWork(payment_engine, SOURCE),
        gateway=gateway,
        orders=orders,
        holds=holds,
        retry=RetryPolicy(sleep=no_sleep),
        poll=PollPolicy(initial_interval=0.01, max_interval=0.05, max_wait=5.0),
    )
    return World(payment_engine, deps, orders, holds, gateway)


# ProcessPayment ─────────────────────────────────────────────────────────────────────────────


async def test_a_payment_succeeds_once_with_its_events(world: World) -> None:
    order = world.reserved_order(12000)
    payment = await world.pay(order)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.transaction_id.startswith("txn_")
    assert payment.reservation_id == order.reservation_id
    assert payment.processed_at is not None
    assert payment.is_simulated

    requested = [
        events_pb2.PaymentRequested.FromString(p) for p in await world.events("payments.requested")
    ]
    succeeded = [
        events_pb2.PaymentSucceeded.FromString(p) for p in await world.events("payments.succeeded")
    ]
    assert [e.payment_id for e in requested] == [payment.payment_id]
    assert [e.transaction_id for e in succeeded] == [payment.transaction_id]
    assert succeeded[0].amount.minor_units == 12000
    assert succeeded[0].reservation_id == order.reservation_id

    again = await world.pay(order)  # another request, same order: no second charge
    assert again.payment_id == payment.payment_id
    assert world.gateway.charges == 1
    assert len(await world.events("payments.succeeded")) == 1


async def test_eight_concurrent_attempts_for_one_order_record_and_charge_once(
    world: World,
) -> None:
    order = world.reserved_order(2500)
    world.gateway.gate.clear()  # hold the winner at the gateway so the others must wait
    attempts = [asyncio.ensure_future(world.pay(order)) for _ in range(8)]
    await asyncio.sleep(0.2)
    world.gateway.gate.set()
    payments = await asyncio.gather(*attempts)

    assert len({p.payment_id for p in payments}) == 1
    assert {p.status for p in payments} == {PaymentStatus.SUCCEEDED}
    assert len({p.transaction_id for p in payments}) == 1
    assert world.gateway.charges == 1
    assert await world.scalar("SELECT count(*) FROM payments") == 1
    assert len(await world.events("payments.requested")) == 1
    assert len(await world.events("payments.succeeded")) == 1


async def test_a_payment_another_call_completes_while_this_one_validates_is_returned(
    world: World,
) -> None:
    # This call finds no payment for the order (step 2), then asks Order; meanwhile another
    # call charges the order and Order and Credit apply it: the order is PAID and its hold
    # CAPTURED by the time they answer. The charge, not a refusal, is the answer.
    order = world.reserved_order(3000)
    hold = world.holds.holds[order.reservation_id]
    ask_order = world.orders.get_order
    raced = False
    winners: list[Payment] = []

    async def get_order_while_another_call_wins(
        order_id: str, time_limit: float
    ) -> OrderSnapshot | None:
        nonlocal raced
        if not raced:
            raced = True
            winners.append(await world.pay(order))  # the other call: sees RESERVED, charges
            world.orders.orders[order_id] = replace(order, status="PAID")
            world.holds.holds[hold.reservation_id] = replace(hold, state="CAPTURED")
        return await ask_order(order_id, time_limit)

    world.orders.get_order = get_order_while_another_call_wins  # type: ignore[method-assign]

    payment = await world.pay(order)

    assert [payment.payment_id] == [winner.payment_id for winner in winners]
    assert payment.status is PaymentStatus.SUCCEEDED
    assert world.gateway.charges == 1


async def test_a_decline_is_a_failed_payment_with_its_event(world: World) -> None:
    order = world.reserved_order(10051)
    payment = await world.pay(order)
    assert payment.status is PaymentStatus.FAILED
    assert payment.error_code == "INSUFFICIENT_FUNDS"
    assert payment.simulated_response.startswith("51")
    failed = [events_pb2.PaymentFailed.FromString(p) for p in await world.events("payments.failed")]
    assert [(e.payment_id, e.error_code) for e in failed] == [
        (payment.payment_id, "INSUFFICIENT_FUNDS")
    ]
    assert await world.events("payments.succeeded") == []
    again = await world.pay(order)
    assert (again.payment_id, again.status) == (payment.payment_id, PaymentStatus.FAILED)
    assert world.gateway.charges == 1


async def test_a_processor_outage_is_retried_then_processing_error(world: World) -> None:
    payment = await world.pay(world.reserved_order(10091))
    assert world.gateway.charges == 3
    assert payment.status is PaymentStatus.FAILED
    assert payment.error_code == "PROCESSING_ERROR"


async def test_without_a_reservation_id_the_orders_hold_is_recorded(world: World) -> None:
    order = world.reserved_order(700)
    payment = await world.pay(order, reservation_id="")
    assert payment.reservation_id == order.reservation_id


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unknown_order", "ORDER_NOT_FOUND"),
        ("other_customer", "ORDER_NOT_OWNED"),
        ("amount_mismatch", "AMOUNT_MISMATCH"),
        ("currency_mismatch", "AMOUNT_MISMATCH"),
        ("order_not_reserved", "ORDER_NOT_PAYABLE"),
        ("unknown_hold", "RESERVATION_NOT_FOUND"),
        ("other_orders_hold", "RESERVATION_MISMATCH"),
        ("expired_hold", "RESERVATION_EXPIRED"),
        ("released_hold", "RESERVATION_NOT_ACTIVE"),
    ],
)
async def test_refused_payments_record_nothing(world: World, case: str, reason: str) -> None:
    order = world.reserved_order(3000)
    other = world.reserved_order(2000, order.customer_id)
    hold = world.holds.holds[order.reservation_id]
    changes: dict[str, object] = {}
    if case == "unknown_order":
        changes = {"order_id": new_id(), "reservation_id": ""}
    elif case == "other_customer":
        changes = {"customer_id": new_id()}
    elif case == "amount_mismatch":
        changes = {"amount": usd(2999)}
    elif case == "currency_mismatch":
        changes = {"amount": Money("EUR", 3000)}
    elif case == "order_not_reserved":
        world.orders.orders[order.order_id] = replace(order, status="REJECTED")
    elif case == "unknown_hold":
        changes = {"reservation_id": new_id()}
    elif case == "other_orders_hold":
        changes = {"reservation_id": other.reservation_id}
    elif case == "expired_hold":
        world.holds.holds[hold.reservation_id] = replace(
            hold, expires_at=datetime.now(UTC) - timedelta(seconds=1)
        )
    elif case == "released_hold":
        world.holds.holds[hold.reservation_id] = replace(hold, state="RELEASED")

    with pytest.raises(DomainError) as raised:
        await world.pay(order, **changes)
    assert raised.value.reason == reason
    assert await world.scalar("SELECT count(*) FROM payments") == 0
    assert await world.scalar("SELECT count(*) FROM outbox") == 0
    assert world.gateway.charges == 0


async def test_another_customer_cannot_get_an_existing_payment(world: World) -> None:
    order = world.reserved_order(1500)
    await world.pay(order)
    with pytest.raises(DomainError) as raised:
        await world.pay(order, customer_id=new_id())
    assert raised.value.reason == "ORDER_NOT_OWNED"


async def test_a_dependency_down_is_unavailable_and_records_nothing(world: World) -> None:
    order = world.reserved_order(1500)
    world.orders.error = Unavailable("order is unavailable", "ORDER_UNAVAILABLE")
    with pytest.raises(Unavailable):
        await world.pay(order)
    assert await world.scalar("SELECT count(*) FROM payments") == 0


async def test_a_duplicate_that_outwaits_its_deadline_is_told_to_retry(world: World) -> None:
    order = world.reserved_order(1200)
    world.gateway.gate.clear()
    first = asyncio.ensure_future(world.pay(order))
    await asyncio.sleep(0.1)
    with pytest.raises(errors.PaymentInProgress):
        await processing.process_payment(world.deps, world.command(order), Deadline.after(0.3))
    world.gateway.gate.set()
    assert (await first).status is PaymentStatus.SUCCEEDED


async def test_a_payment_left_pending_by_a_crash_is_settled_once(world: World) -> None:
    order = world.reserved_order(4200)
    world.gateway.gate.clear()
    crashed = asyncio.ensure_future(world.pay(order))
    await asyncio.sleep(0.1)
    crashed.cancel()  # the process died between recording and settling
    with pytest.raises(asyncio.CancelledError):
        await crashed
    world.gateway.gate.set()
    async with world.engine.begin() as conn:
        await conn.execute(text("UPDATE payments SET created_at = now() - interval '1 minute'"))

    assert await recovery.settle_stale(world.deps) == 1
    assert await recovery.settle_stale(world.deps) == 0
    async with world.deps.unit_of_work() as uow:
        payment = (await queries.list_payments(uow, order.order_id, None, None, 10))[0]
    assert payment.status is PaymentStatus.SUCCEEDED
    assert len(await world.events("payments.succeeded")) == 1
    assert (await world.pay(order)).transaction_id == payment.transaction_id


async def test_a_duplicate_settles_a_stale_pending_payment_itself(world: World) -> None:
    order = world.reserved_order(4300)
    world.gateway.gate.clear()
    crashed = asyncio.ensure_future(world.pay(order))
    await asyncio.sleep(0.1)
    crashed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await crashed
    world.gateway.gate.set()
    async with world.engine.begin() as conn:
        await conn.execute(text("UPDATE payments SET created_at = now() - interval '1 minute'"))
    payment = await world.pay(order)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert len(await world.events("payments.succeeded")) == 1


# Refunds ────────────────────────────────────────────────────────────────────────────────────


def refund_cmd(
    payment_id: str, minor_units: int | None, request_id: str | None = None
) -> refunds.RefundPayment:
    return refunds.RefundPayment(
        payment_id=payment_id,
        amount=usd(minor_units) if minor_units is not None else None,
        reason="customer changed their mind",
        request_id=request_id or new_id(),
        fingerprint=f"{payment_id}:{minor_units}:{request_id}".encode(),
    )


async def test_partial_then_full_refund(world: World) -> None:
    payment = await world.pay(world.reserved_order(8000))
    refund, after = await refunds.refund_payment(world.deps, refund_cmd(payment.payment_id, 3000))
    assert refund.status is RefundStatus.SUCCEEDED
    assert refund.transaction_id.startswith("txn_")
    assert (after.status, after.refunded) == (PaymentStatus.PARTIALLY_REFUNDED, 3000)

    with pytest.raises(DomainError) as raised:
        await refunds.refund_payment(world.deps, refund_cmd(payment.payment_id, 5001))
    assert raised.value.reason == "REFUND_EXCEEDS_PAYMENT"

    rest, after = await refunds.refund_payment(world.deps, refund_cmd(payment.payment_id, None))
    assert rest.amount == usd(5000)
    assert (after.status, after.refunded) == (PaymentStatus.REFUNDED, 8000)

    with pytest.raises(DomainError) as nothing_left:
        await refunds.refund_payment(world.deps, refund_cmd(payment.payment_id, 1))
    assert nothing_left.value.reason == "PAYMENT_NOT_REFUNDABLE"

    refunded = [
        events_pb2.PaymentRefunded.FromString(p) for p in await world.events("payments.refunded")
    ]
    assert [
        (e.amount.minor_units, e.refunded_total.minor_units, e.fully_refunded) for e in refunded
    ] == [
        (3000, 3000, False),
        (5000, 8000, True),
    ]
    assert len(await world.events("payments.refund_requested")) == 2


async def test_a_failed_or_unknown_payment_is_not_refundable(world: World) -> None:
    declined = await world.pay(world.reserved_order(1005))
    with pytest.raises(DomainError) as raised:
        await refunds.refund_payment(world.deps, refund_cmd(declined.payment_id, None))
    assert raised.value.reason == "PAYMENT_NOT_REFUNDABLE"
    with pytest.raises(DomainError) as unknown:
        await refunds.refund_payment(world.deps, refund_cmd(new_id(), None))
    assert unknown.value.reason == "PAYMENT_NOT_FOUND"


async def test_concurrent_refunds_never_exceed_the_amount(world: World) -> None:
    payment = await world.pay(world.reserved_order(10000))
    results = await asyncio.gather(
        *(
            refunds.refund_payment(world.deps, refund_cmd(payment.payment_id, 3000))
            for _ in range(10)
        ),
        return_exceptions=True,
    )
    done = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, DomainError)]
    assert len(done) == 3
    assert len(refused) == 7
    assert {e.reason for e in refused} == {"REFUND_EXCEEDS_PAYMENT"}
    assert await world.scalar("SELECT refunded FROM payments") == 9000
    assert await world.scalar("SELECT coalesce(sum(amount), 0) FROM refunds") == 9000
    assert await world.scalar("SELECT status FROM payments") == "PARTIALLY_REFUNDED"
    assert len(await world.events("payments.refunded")) == 3


async def test_a_refund_request_id_is_idempotent(world: World) -> None:
    payment = await world.pay(world.reserved_order(6000))
    request_id = new_id()
    first, _ = await refunds.refund_payment(
        world.deps, refund_cmd(payment.payment_id, 1000, request_id)
    )
    again, after = await refunds.refund_payment(
        world.deps, refund_cmd(payment.payment_id, 1000, request_id)
    )
    assert again.refund_id == first.refund_id
    assert after.refunded == 1000
    assert world.gateway.refunds == 1

    with pytest.raises(IdempotencyKeyReused):
        await refunds.refund_payment(world.deps, refund_cmd(payment.payment_id, 2000, request_id))
    assert await world.scalar("SELECT count(*) FROM refunds") == 1


async def test_concurrent_retries_of_one_refund_make_one_refund(world: World) -> None:
    payment = await world.pay(world.reserved_order(6000))
    request_id = new_id()
    results = await asyncio.gather(
        *(
            refunds.refund_payment(world.deps, refund_cmd(payment.payment_id, 1000, request_id))
            for _ in range(5)
        )
    )
    assert len({refund.refund_id for refund, _ in results}) == 1
    assert await world.scalar("SELECT count(*) FROM refunds") == 1
    assert await world.scalar("SELECT refunded FROM payments") == 1000
    assert len(await world.events("payments.refunded")) == 1


async def test_a_refund_left_pending_is_completed_by_recovery(world: World) -> None:
    payment = await world.pay(world.reserved_order(6000))

    class DownGateway(CountingGateway):
        async def refund(self, refund_id: str, payment_id: str, amount: Money) -> RefundOutcome:
            raise GatewayUnavailable("processor down")

    world.deps.gateway = DownGateway()
    with pytest.raises(errors.GatewayDown):
        await refunds.refund_payment(world.deps, refund_cmd(payment.payment_id, 2500))
    assert await world.scalar("SELECT status FROM refunds") == "PENDING"
    # The pending refund is promised money: nothing beyond the rest can be refunded meanwhile.
    with pytest.raises(DomainError) as raised:
        await refunds.refund_payment(world.deps, refund_cmd(payment.payment_id, 3501))
    assert raised.value.reason == "REFUND_EXCEEDS_PAYMENT"
    assert await recovery.settle_stale(world.deps) == 0  # not stale yet

    world.deps.gateway = world.gateway
    async with world.engine.begin() as conn:
        await conn.execute(text("UPDATE refunds SET created_at = now() - interval '1 minute'"))
    assert await recovery.settle_stale(world.deps) == 1
    assert await world.scalar("SELECT status FROM refunds") == "SUCCEEDED"
    assert await world.scalar("SELECT refunded FROM payments") == 2500
    assert len(await world.events("payments.refunded")) == 1


# Compensation: a payment that won the race with its order's cancel ─────────────────────────


async def note_cancelled(world: World, order: OrderSnapshot) -> None:
    async with world.deps.unit_of_work() as uow:
        event = order_events.OrderCancelled(order_id=order.order_id, reason="changed mind")
        await compensation.note_cancelled_order(uow, event)


async def test_a_payment_that_beat_the_cancel_is_refunded_once(world: World) -> None:
    order = world.reserved_order(4200)
    payment = await world.pay(order)  # charged while the order was still RESERVED
    world.orders.orders[order.order_id] = replace(order, status="CANCELLED")
    await note_cancelled(world, order)
    await note_cancelled(world, order)  # a redelivery or duplicate changes nothing

    assert await recovery.compensate_cancelled_orders(world.deps) == 1
    assert await recovery.compensate_cancelled_orders(world.deps) == 0  # nothing left to do

    async with world.deps.unit_of_work() as uow:
        refunded = await queries.get_payment(uow, payment.payment_id)
    assert refunded.status is PaymentStatus.REFUNDED
    assert refunded.refunded == 4200
    assert world.gateway.refunds == 1
    events = [
        events_pb2.PaymentRefunded.FromString(p) for p in await world.events("payments.refunded")
    ]
    assert [(e.order_id, e.amount.minor_units, e.fully_refunded) for e in events] == [
        (order.order_id, 4200, True)
    ]
    assert events[0].reason.startswith("ORDER_CANCELLED")


async def test_a_payment_settling_after_the_cancel_is_refunded_once_it_settles(
    world: World,
) -> None:
    order = world.reserved_order(3100)
    world.gateway.gate.clear()  # the gateway is slow: the cancel lands meanwhile
    paying = asyncio.create_task(world.pay(order))
    while not await world.scalar("SELECT count(*) FROM payments"):
        await asyncio.sleep(0.01)
    world.orders.orders[order.order_id] = replace(order, status="CANCELLED")
    await note_cancelled(world, order)
    assert await recovery.compensate_cancelled_orders(world.deps) == 0  # still PENDING: wait

    world.gateway.gate.set()
    payment = await paying
    assert payment.status is PaymentStatus.SUCCEEDED
    assert await recovery.compensate_cancelled_orders(world.deps) == 1
    assert await world.scalar("SELECT status FROM payments") == "REFUNDED"
    assert world.gateway.refunds == 1


async def test_a_late_or_forged_cancel_of_a_paid_order_refunds_nothing(world: World) -> None:
    order = world.reserved_order(2500)
    payment = await world.pay(order)
    world.orders.orders[order.order_id] = replace(order, status="PAID")
    await note_cancelled(world, order)  # Order never cancelled it: Order is asked, and says so

    assert await recovery.compensate_cancelled_orders(world.deps) == 1
    assert await world.scalar("SELECT outcome FROM cancelled_orders") == "NOT_CANCELLED"
    assert await world.scalar("SELECT status FROM payments") == "SUCCEEDED"
    assert world.gateway.refunds == 0
    assert payment.refunded == 0


async def test_a_partly_refunded_payment_gets_the_rest_back(world: World) -> None:
    order = world.reserved_order(5000)
    payment = await world.pay(order)
    await refunds.refund_payment(
        world.deps,
        refunds.RefundPayment(
            payment_id=payment.payment_id,
            amount=usd(1200),
            reason="one book was damaged",
            request_id=new_id(),
            fingerprint=b"by-hand",
        ),
    )
    world.orders.orders[order.order_id] = replace(order, status="CANCELLED")
    await note_cancelled(world, order)

    assert await recovery.compensate_cancelled_orders(world.deps) == 1
    assert await world.scalar("SELECT refunded FROM payments") == 5000
    assert await world.scalar("SELECT count(*) FROM refunds") == 2


async def test_a_cancelled_order_nothing_was_charged_for_is_closed_once_no_payment_can_come(
    world: World,
) -> None:
    old, fresh = world.reserved_order(1000), world.reserved_order(1000)
    await note_cancelled(world, old)
    await note_cancelled(world, fresh)
    async with world.engine.begin() as conn:  # noted long enough ago that no payment can come
        await conn.execute(
            text(
                "UPDATE cancelled_orders SET noted_at = now() - interval '1 hour'"
                " WHERE order_id = :id"
            ),
            {"id": old.order_id},
        )

    assert await recovery.compensate_cancelled_orders(world.deps) == 0
    assert world.orders.calls == 0  # nothing to ask Order about
    async with world.engine.connect() as conn:
        result = await conn.execute(text("SELECT order_id::text, outcome FROM cancelled_orders"))
        rows: dict[str, str | None] = {row.order_id: row.outcome for row in result}
    assert rows == {old.order_id: "NOTHING_CHARGED", fresh.order_id: None}


async def test_a_caller_cannot_spend_the_compensating_refunds_key_first(world: World) -> None:
    # The job's request id used to be derived from the order id alone (uuid5 of a constant):
    # a caller could refund 1 unit with it, and the job then found "its" refund done.
    order = world.reserved_order(4200)
    payment = await world.pay(order)
    guessed = str(
        uuid.uuid5(
            uuid.UUID("6f0c8e2a-4b1d-4c3e-9a7f-2d5e8b1c0a93"),
            f"compensate-cancelled-order:{order.order_id}",
        )
    )
    await refunds.refund_payment(world.deps, refund_cmd(payment.payment_id, 1, guessed))
    world.orders.orders[order.order_id] = replace(order, status="CANCELLED")
    await note_cancelled(world, order)

    assert await recovery.compensate_cancelled_orders(world.deps) == 1
    assert await world.scalar("SELECT refunded FROM payments") == 4200
    assert await world.scalar("SELECT status FROM payments") == "REFUNDED"
    assert (
        await world.scalar("SELECT count(*) FROM cancelled_orders WHERE refund_id IS NOT NULL") == 1
    )


async def test_two_identical_full_refunds_at_once_both_get_the_first_ones_answer(
    world: World,
) -> None:
    payment = await world.pay(world.reserved_order(6000))
    request_id = new_id()
    async with world.engine.begin() as conn:
        # Hold the payment's row: both calls look their request id up (nothing yet), then
        # queue on the row lock; the first records the full refund, the second must answer
        # with it rather than find nothing left to refund.
        await conn.execute(
            text("SELECT 1 FROM payments WHERE payment_id = :id FOR UPDATE"),
            {"id": payment.payment_id},
        )
        calls = [
            asyncio.create_task(
                refunds.refund_payment(world.deps, refund_cmd(payment.payment_id, None, request_id))
            )
            for _ in range(2)
        ]
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        for _ in range(500):
            if await world.scalar(waiting) == 2:
                break
            await asyncio.sleep(0.01)
        assert await world.scalar(waiting) == 2
    results = await asyncio.gather(*calls)
    assert len({refund.refund_id for refund, _ in results}) == 1
    assert await world.scalar("SELECT count(*) FROM refunds") == 1
    assert await world.scalar("SELECT refunded FROM payments") == 6000
