"""The order-payment saga end to end: three services as separate processes, real NATS
JetStream and PostgreSQL, driven only through the public gRPC APIs (DESIGN §2-§5)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import grpc
import pytest

from services.localmesh.mesh import LocalMesh
from shop.credit.v1 import credit_pb2
from shop.order.v1 import order_pb2, order_service_pb2
from shop.payment.v1 import payment_pb2
from tests.conftest import Infra
from tests.e2e.conftest import rich_status
from tests.e2e.shop import Shop, events_of, eventually, usd
from tests.ids import new_id

pytestmark = pytest.mark.e2e

ORDER = order_pb2
RESERVATION = credit_pb2
PAYMENT = payment_pb2


@pytest.fixture
async def shop(mesh: LocalMesh) -> AsyncIterator[Shop]:
    channels = {name: grpc.aio.insecure_channel(s.target) for name, s in mesh.services.items()}
    client = Shop.connect(channels)
    try:
        yield client
        await client.check_books()  # after every test: the money adds up for everyone
    finally:
        for channel in channels.values():
            await channel.close()


async def test_no_credits_is_rejected_then_top_up_reserves_and_holds(shop: Shop) -> None:
    customer = shop.new_customer()
    rejected = await shop.create_order(customer, 15000)
    assert rejected.status == ORDER.ORDER_STATUS_PENDING
    rejected = await shop.order_in(rejected.order_id, ORDER.ORDER_STATUS_REJECTED)
    assert rejected.failure_reason == "ACCOUNT_NOT_FOUND"

    await shop.top_up(customer, 20000)
    order = await shop.reserved_order(customer, 15000)
    assert order.reservation_id
    account = await shop.account(customer)
    assert (account.available.minor_units, account.reserved.minor_units) == (5000, 15000)
    hold = await shop.reservation(order.reservation_id)
    assert hold.state == RESERVATION.RESERVATION_STATE_ACTIVE
    assert (hold.order_id, hold.customer_id) == (order.order_id, customer)
    assert hold.amount.minor_units == 15000

    # Not enough left for a second order of the same size.
    second = await shop.create_order(customer, 15000)
    second = await shop.order_in(second.order_id, ORDER.ORDER_STATUS_REJECTED)
    assert second.failure_reason == "INSUFFICIENT_CREDITS"


async def test_payment_succeeds_captures_the_hold_and_pays_the_order(shop: Shop) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 50000)
    order = await shop.reserved_order(customer, 12000)

    response = await shop.pay(order)
    assert response.success, response
    payment = response.payment
    assert payment.status == PAYMENT.PAYMENT_STATUS_SUCCEEDED
    assert re.fullmatch(r"txn_[0-9a-f]{16}", payment.transaction_id)
    assert (payment.amount.currency_code, payment.amount.minor_units) == ("USD", 12000)
    assert payment.is_simulated

    paid = await shop.order_in(order.order_id, ORDER.ORDER_STATUS_PAID)
    assert paid.payment_id == payment.payment_id
    hold = await shop.reservation_in(order.reservation_id, RESERVATION.RESERVATION_STATE_CAPTURED)
    assert hold.payment_id == payment.payment_id
    account = await shop.account(customer)
    assert (account.available.minor_units, account.reserved.minor_units) == (38000, 0)
    assert account.spent.minor_units == 12000


async def test_paying_twice_returns_the_first_payment(shop: Shop) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 10000)
    order = await shop.reserved_order(customer, 4000)
    first = await shop.pay(order)
    again = await shop.pay(order)  # another request id, same order
    assert again.success
    assert again.payment.payment_id == first.payment.payment_id
    assert again.payment.transaction_id == first.payment.transaction_id
    assert len(await shop.payments_of(order.order_id)) == 1


async def test_a_concurrent_burst_for_one_order_charges_once(shop: Shop, infra: Infra) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 10000)
    order = await shop.reserved_order(customer, 2500)
    responses = await asyncio.gather(*(shop.pay(order) for _ in range(8)))
    assert all(r.success for r in responses)
    assert len({r.payment.payment_id for r in responses}) == 1
    assert len({r.payment.transaction_id for r in responses}) == 1
    assert len(await shop.payments_of(order.order_id)) == 1
    await shop.order_in(order.order_id, ORDER.ORDER_STATUS_PAID)
    await shop.reservation_in(order.reservation_id, RESERVATION.RESERVATION_STATE_CAPTURED)
    account = await shop.account(customer)
    assert account.spent.minor_units == 2500  # captured once
    # Credit captured on payments.succeeded, so that is on the stream; credits.captured is
    # published by Credit's relay just after its commit: wait for it. Each exactly once.
    events = await eventually(
        lambda: events_of(infra.nats_url, customer), lambda found: "credits.captured" in found
    )
    assert len(events["payments.succeeded"]) == 1
    assert len(events["payments.requested"]) == 1
    assert len(events["credits.captured"]) == 1


async def test_a_decline_fails_the_order_and_gives_the_credits_back(shop: Shop) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 30000)
    order = await shop.reserved_order(customer, 10051)  # …51: insufficient funds

    response = await shop.pay(order)
    assert not response.success
    assert response.error_message
    assert response.payment.status == PAYMENT.PAYMENT_STATUS_FAILED
    assert response.payment.error_code == "INSUFFICIENT_FUNDS"

    failed = await shop.order_in(order.order_id, ORDER.ORDER_STATUS_PAYMENT_FAILED)
    assert failed.failure_reason == "INSUFFICIENT_FUNDS"
    hold = await shop.reservation_in(order.reservation_id, RESERVATION.RESERVATION_STATE_RELEASED)
    assert hold.release_reason == "PAYMENT_FAILED"
    account = await shop.account(customer)
    assert (account.available.minor_units, account.spent.minor_units) == (30000, 0)


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("bad_fields", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        ("unknown_order", grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND"),
        ("other_customer", grpc.StatusCode.PERMISSION_DENIED, "ORDER_NOT_OWNED"),
        ("amount_mismatch", grpc.StatusCode.INVALID_ARGUMENT, "AMOUNT_MISMATCH"),
        ("order_not_reserved", grpc.StatusCode.FAILED_PRECONDITION, "ORDER_NOT_PAYABLE"),
        ("other_orders_hold", grpc.StatusCode.FAILED_PRECONDITION, "RESERVATION_MISMATCH"),
        ("unknown_hold", grpc.StatusCode.FAILED_PRECONDITION, "RESERVATION_NOT_FOUND"),
    ],
)
async def test_bad_payment_requests_are_refused_and_change_nothing(
    shop: Shop, case: str, code: grpc.StatusCode, reason: str
) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 20000)
    order = await shop.reserved_order(customer, 3000)
    other = await shop.reserved_order(customer, 2000)
    rejected = await shop.create_order(shop.new_customer(), 1000)  # no account: REJECTED
    rejected = await shop.order_in(rejected.order_id, ORDER.ORDER_STATUS_REJECTED)
    before = await shop.account(customer)

    target, overrides = order, {}
    if case == "bad_fields":
        overrides = {"order_id": "nope", "amount": usd(-5), "request_id": ""}
    elif case == "unknown_order":
        overrides = {"order_id": new_id(), "reservation_id": ""}
    elif case == "other_customer":
        overrides = {"customer_id": new_id()}
    elif case == "amount_mismatch":
        overrides = {"amount": usd(2999)}
    elif case == "order_not_reserved":
        target = rejected
    elif case == "other_orders_hold":
        overrides = {"reservation_id": other.reservation_id}
    elif case == "unknown_hold":
        overrides = {"reservation_id": new_id()}

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await shop.pay(target, **overrides)
    assert raised.value.code() == code, raised.value.details()
    info, bad = rich_status(raised.value)
    assert info is not None
    assert info.reason == reason
    if case == "bad_fields":
        assert bad is not None
        fields = {v.field for v in bad.field_violations}
        assert fields == {"order_id", "amount", "request_id"}
    if case == "amount_mismatch":
        assert bad is not None
        assert [v.field for v in bad.field_violations] == ["amount"]

    # Nothing changed: no payment, the holds and the balance are as they were.
    assert await shop.payments_of(order.order_id) == []
    assert await shop.payments_of(rejected.order_id) == []
    assert (await shop.get_order(order.order_id)).status == ORDER.ORDER_STATUS_RESERVED
    assert await shop.account(customer) == before


async def test_cancel_releases_a_reserved_order_and_refuses_a_paid_one(shop: Shop) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 10000)
    order = await shop.reserved_order(customer, 6000)
    cancelled = (
        await shop.order.CancelOrder(
            order_service_pb2.CancelOrderRequest(order_id=order.order_id, reason="changed my mind")
        )
    ).order
    assert cancelled.status == ORDER.ORDER_STATUS_CANCELLED
    hold = await shop.reservation_in(order.reservation_id, RESERVATION.RESERVATION_STATE_RELEASED)
    assert hold.release_reason == "ORDER_CANCELLED"
    account = await shop.account(customer)
    assert (account.available.minor_units, account.reserved.minor_units) == (10000, 0)
    again = (
        await shop.order.CancelOrder(order_service_pb2.CancelOrderRequest(order_id=order.order_id))
    ).order
    assert again.status == ORDER.ORDER_STATUS_CANCELLED  # idempotent

    paid = await shop.reserved_order(customer, 3000)
    await shop.pay(paid)
    await shop.order_in(paid.order_id, ORDER.ORDER_STATUS_PAID)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await shop.order.CancelOrder(order_service_pb2.CancelOrderRequest(order_id=paid.order_id))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = rich_status(raised.value)
    assert info is not None
    assert info.reason == "ORDER_ALREADY_PAID"
    assert (await shop.get_order(paid.order_id)).status == ORDER.ORDER_STATUS_PAID


async def test_partial_then_full_refund_gives_credits_back(shop: Shop) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 10000)
    order = await shop.reserved_order(customer, 8000)
    payment = (await shop.pay(order)).payment

    partial = await shop.refund(payment.payment_id, 3000)
    assert partial.payment.status == PAYMENT.PAYMENT_STATUS_PARTIALLY_REFUNDED
    assert partial.payment.refunded_amount.minor_units == 3000
    assert partial.refund.amount.minor_units == 3000
    await eventually_available(shop, customer, 2000 + 3000)
    assert (await shop.get_order(order.order_id)).status == ORDER.ORDER_STATUS_PAID

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await shop.refund(payment.payment_id, 5001)  # only 5000 left
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = rich_status(raised.value)
    assert info is not None
    assert info.reason == "REFUND_EXCEEDS_PAYMENT"

    rest = await shop.refund(payment.payment_id)  # no amount: everything left
    assert rest.refund.amount.minor_units == 5000
    assert rest.payment.status == PAYMENT.PAYMENT_STATUS_REFUNDED
    assert rest.payment.refunded_amount.minor_units == 8000
    await shop.order_in(order.order_id, ORDER.ORDER_STATUS_REFUNDED)
    account = await eventually_available(shop, customer, 10000)
    assert account.spent.minor_units == 0

    with pytest.raises(grpc.aio.AioRpcError) as nothing_left:
        await shop.refund(payment.payment_id, 1)
    assert nothing_left.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def eventually_available(
    shop: Shop, customer: str, minor_units: int
) -> credit_pb2.CreditAccount:
    return await eventually(
        lambda: shop.account(customer), lambda a: a.available.minor_units == minor_units
    )
