"""Scenario 8: duplicate, reordered and late events published by hand onto the subjects.

No illegal transition and no double effect, whatever arrives: the inbox drops an event seen
before (same event id, even under a new `Nats-Msg-Id`), and the state machines ignore an
event that does not apply (a second `payments.succeeded`, a `payments.failed` or an
`orders.cancelled` for a paid order, an `orders.created` for an order that has its hold).

The one real race, a payment that succeeds at the gateway after its order was cancelled,
is produced for real (a slow gateway, a cancel meanwhile): Credit captures the amount (the
customer paid), the order stays CANCELLED, and the compensating path documented in
docs/reliability.md, a refund of that payment, gives the credits back.
"""

from __future__ import annotations

import asyncio

import pytest

from services.common.events import EVENT_TYPES, new_event
from shop.credit.v1 import credit_pb2
from shop.order.v1 import events_pb2 as order_events
from shop.order.v1 import order_pb2, order_service_pb2
from shop.payment.v1 import events_pb2 as payment_events
from shop.payment.v1 import payment_pb2
from tests.chaos.conftest import Chaos
from tests.chaos.events import publish
from tests.chaos.load import FINAL, create_order, order_until, pay, retrying, saga, top_up
from tests.e2e.shop import usd
from tests.ids import new_id

pytestmark = pytest.mark.chaos


async def _snapshot(chaos: Chaos, customer: str) -> tuple[object, ...]:
    db = await chaos.cluster.db()
    try:
        return (
            tuple(
                await db.fetchrow("SELECT * FROM credits.accounts WHERE customer_id = $1", customer)
            ),
            tuple(
                tuple(r)
                for r in await db.fetch(
                    "SELECT reservation_id, state, amount, payment_id FROM credits.reservations"
                    " WHERE customer_id = $1 ORDER BY reservation_id",
                    customer,
                )
            ),
            tuple(
                tuple(r)
                for r in await db.fetch(
                    "SELECT order_id, status, payment_id FROM orders.orders"
                    " WHERE customer_id = $1 ORDER BY order_id",
                    customer,
                )
            ),
            tuple(
                tuple(r)
                for r in await db.fetch(
                    "SELECT payment_id, status, refunded FROM payments.payments"
                    " WHERE customer_id = $1 ORDER BY payment_id",
                    customer,
                )
            ),
        )
    finally:
        await db.close()


async def test_8_duplicate_reordered_and_late_events(chaos: Chaos) -> None:
    cluster, tracker = chaos.cluster, chaos.tracker
    nats_url = cluster.nats.url
    async with cluster.shop() as shop:
        customer = shop.new_customer()
        await top_up(shop, tracker, customer, 50_000)
        assert await saga(shop, tracker, customer, 4_000) == order_pb2.ORDER_STATUS_PAID
        chaos.sagas()
        await chaos.check()
        before = await _snapshot(chaos, customer)

        # (a) every event of that saga again, same event id, new Nats-Msg-Id
        db = await cluster.db()
        try:
            rows = []
            for schema in ("orders", "credits", "payments"):
                rows += await db.fetch(f"SELECT event_type, payload FROM {schema}.outbox")
        finally:
            await db.close()
        mine = [
            EVENT_TYPES[r["event_type"]].FromString(r["payload"])
            for r in rows
            if getattr(EVENT_TYPES[r["event_type"]].FromString(r["payload"]), "customer_id", "")
            == customer
        ]
        assert len(mine) >= 5, mine
        for event in reversed(mine):  # reordered too: newest first
            await publish(nats_url, event)
        chaos.fault(len(mine))

        # (b) the same facts as new events (new event ids): a second payments.succeeded,
        # a late payments.failed and orders.cancelled, a second orders.created
        paid = next(e for e in mine if isinstance(e, payment_events.PaymentSucceeded))
        created = next(e for e in mine if isinstance(e, order_events.OrderCreated))
        copies = [
            new_event(
                payment_events.PaymentSucceeded,
                **{
                    f.name: v
                    for f, v in paid.ListFields()
                    if f.name not in ("event_id", "occurred_at")
                },
            ),
            new_event(
                payment_events.PaymentFailed,
                payment_id=paid.payment_id,
                order_id=paid.order_id,
                customer_id=paid.customer_id,
                reservation_id=paid.reservation_id,
                amount=paid.amount,
                error_code="CARD_DECLINED",
                error_message="late and wrong",
            ),
            new_event(
                order_events.OrderCancelled,
                order_id=paid.order_id,
                customer_id=customer,
                reservation_id=paid.reservation_id,
                reason="late",
            ),
            new_event(
                order_events.OrderCreated,
                **{
                    f.name: v
                    for f, v in created.ListFields()
                    if f.name not in ("event_id", "occurred_at")
                },
            ),
        ]
        for event in copies:
            await publish(nats_url, event)
        chaos.fault(len(copies))
        await chaos.check()
        assert await _snapshot(chaos, customer) == before, "a duplicate or late event had an effect"

        # (c) orders.cancelled before orders.created (reordered) → no hold is ever taken
        ghost = new_id()
        cancelled = new_event(
            order_events.OrderCancelled, order_id=ghost, customer_id=customer, reason="reordered"
        )
        ghost_created = new_event(
            order_events.OrderCreated,
            order_id=ghost,
            customer_id=customer,
            items=[order_pb2.OrderItem(sku="SKU-GHOST", quantity=1, unit_price=usd(900))],
            total=usd(900),
        )
        await publish(nats_url, cancelled)
        await chaos.check()
        await publish(nats_url, ghost_created)
        chaos.fault(2)
        await chaos.check()
        holds = [h for h in await shop.reservations_of(customer) if h.order_id == ghost]
        assert all(h.state != credit_pb2.RESERVATION_STATE_ACTIVE for h in holds), holds
        assert await _snapshot(chaos, customer) == before

        # (d) for real: the gateway answers after the order was cancelled
        await asyncio.to_thread(
            cluster.restart, "payment", None, True, {"PAYMENT_GATEWAY_LATENCY_MS": "4000"}
        )
        order = await create_order(shop, tracker, customer, 2_000)
        order = await order_until(shop, tracker, order.order_id, (order_pb2.ORDER_STATUS_RESERVED,))
        chaos.sagas()
        request_id = new_id()
        paying = asyncio.create_task(pay(shop, tracker, order, request_id))
        db = await cluster.db()
        try:
            for _ in range(200):  # the payment is PENDING at the (slow) gateway
                if await db.fetchval(
                    "SELECT count(*) FROM payments.payments WHERE order_id = $1", order.order_id
                ):
                    break
                await asyncio.sleep(0.05)
        finally:
            await db.close()
        cancel = order_service_pb2.CancelOrderRequest(
            order_id=order.order_id, reason="changed mind"
        )
        await retrying(lambda: shop.order.CancelOrder(cancel), tracker)
        chaos.fault()
        answer = await paying
        assert answer.payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED, answer
        await chaos.check()
        final = await order_until(shop, tracker, order.order_id, FINAL)
        assert final.status == order_pb2.ORDER_STATUS_CANCELLED  # no illegal CANCELLED → PAID
        hold = await shop.reservation(order.reservation_id)
        assert hold.state == credit_pb2.RESERVATION_STATE_CAPTURED  # the customer did pay

        # the compensating path: Payment refunds that payment by itself (it follows
        # orders.cancelled and asks Order), once; the credits come back
        payments = await shop.payments_of(order.order_id)
        for _ in range(300):
            if [p.status for p in payments] == [payment_pb2.PAYMENT_STATUS_REFUNDED]:
                break
            await asyncio.sleep(0.1)
            payments = await shop.payments_of(order.order_id)
        assert [p.status for p in payments] == [payment_pb2.PAYMENT_STATUS_REFUNDED], payments
        assert payments[0].refunded_amount.minor_units == 2_000
        await chaos.check()  # settles: Credit has given the credits back
        db = await cluster.db()
        try:
            refunds = await db.fetch(
                "SELECT reason FROM payments.refunds WHERE payment_id = $1",
                answer.payment.payment_id,
            )
            spent = await db.fetchval(
                "SELECT spent FROM credits.accounts WHERE customer_id = $1", customer
            )
        finally:
            await db.close()
        assert [r["reason"].split(":")[0] for r in refunds] == ["ORDER_CANCELLED"]
        assert spent == 4_000  # the paid saga's only: the late payment was given back
        assert (await shop.get_order(order.order_id)).status == order_pb2.ORDER_STATUS_CANCELLED

        # (e) the same race when the released credits are held and spent by a second order
        # before the late payment lands: nothing can be captured for the first order, so its
        # compensating refund gives nothing back (it used to give back what the second order
        # spent: credits created from nothing). Then that refund republished under a new
        # event id, and a refund the payment never made: no effect.
        short = shop.new_customer()
        await top_up(shop, tracker, short, 2_000)
        first = await create_order(shop, tracker, short, 2_000)
        first = await order_until(shop, tracker, first.order_id, (order_pb2.ORDER_STATUS_RESERVED,))
        chaos.sagas()
        paying_first = asyncio.create_task(pay(shop, tracker, first, new_id()))
        db = await cluster.db()
        try:
            for _ in range(200):
                if await db.fetchval(
                    "SELECT count(*) FROM payments.payments WHERE order_id = $1", first.order_id
                ):
                    break
                await asyncio.sleep(0.05)
        finally:
            await db.close()
        cancel = order_service_pb2.CancelOrderRequest(order_id=first.order_id, reason="oops")
        await retrying(lambda: shop.order.CancelOrder(cancel), tracker)
        second = await create_order(shop, tracker, short, 2_000)
        second = await order_until(
            shop, tracker, second.order_id, (order_pb2.ORDER_STATUS_RESERVED,)
        )
        chaos.sagas()
        paying_second = asyncio.create_task(pay(shop, tracker, second, new_id()))
        late = await paying_first
        assert late.payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED, late
        spent = await paying_second
        assert spent.payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED, spent
        chaos.fault()
        for _ in range(300):  # the compensating refund of the late payment
            payments = await shop.payments_of(first.order_id)
            if [p.status for p in payments] == [payment_pb2.PAYMENT_STATUS_REFUNDED]:
                break
            await asyncio.sleep(0.1)
        assert [p.status for p in payments] == [payment_pb2.PAYMENT_STATUS_REFUNDED], payments
        await chaos.check()  # money conserved; Credit gave back nothing for the late payment
        db = await cluster.db()
        try:
            account = await db.fetchrow(
                "SELECT available, reserved, spent FROM credits.accounts WHERE customer_id = $1",
                short,
            )
            rows = await db.fetch(
                "SELECT payload FROM payments.outbox WHERE subject = 'payments.refunded'"
            )
        finally:
            await db.close()
        assert tuple(account) == (0, 0, 2_000)  # the second order's spend, nothing created
        (refunded,) = [
            event
            for event in (payment_events.PaymentRefunded.FromString(r["payload"]) for r in rows)
            if event.payment_id == late.payment.payment_id
        ]
        republished = new_event(
            payment_events.PaymentRefunded,
            **{
                f.name: v
                for f, v in refunded.ListFields()
                if f.name not in ("event_id", "occurred_at")
            },
        )
        never_made = new_event(  # a refund of the paid order that Payment never made
            payment_events.PaymentRefunded,
            refund_id=new_id(),
            payment_id=new_id(),
            order_id=second.order_id,
            customer_id=short,
            amount=usd(2_000),
        )
        await publish(nats_url, republished)
        await publish(nats_url, never_made)
        chaos.fault(2)
        await chaos.check()
        assert await _balances(chaos, short) == (0, 0, 2_000)


async def _balances(chaos: Chaos, customer: str) -> tuple[int, int, int]:
    db = await chaos.cluster.db()
    try:
        row = await db.fetchrow(
            "SELECT available, reserved, spent FROM credits.accounts WHERE customer_id = $1",
            customer,
        )
    finally:
        await db.close()
    return (row["available"], row["reserved"], row["spent"])
