"""PaymentService through a real gRPC server and real PostgreSQL. Order and Credit are
stand-ins served over gRPC too (only GetOrder / GetReservation), so the gRPC adapters, the
status mapping and AIP-155 request ids are exercised exactly as a client sees them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.errors import NotFound
from services.common.grpc_client import create_channel
from services.common.grpc_server import GrpcServer, create_server
from services.common.idempotency import RequestLedger
from services.common.paging import Pager
from services.payment.adapters.dependencies import GrpcHolds, GrpcOrders
from services.payment.adapters.simulator import SimulatedGateway
from services.payment.adapters.unit_of_work import SqlPaymentUnitOfWork
from services.payment.entrypoints.grpc_api import PaymentApi
from services.payment.service_layer.dependencies import Dependencies, RetryPolicy
from shop.common.v1.money_pb2 import Money
from shop.credit.v1 import credit_pb2, credit_service_pb2
from shop.order.v1 import order_pb2, order_service_pb2
from shop.payment.v1 import payment_pb2, payment_service_pb2, payment_service_pb2_grpc
from tests.e2e.conftest import rich_status
from tests.ids import new_id

pytestmark = pytest.mark.integration

Context = grpc.aio.ServicerContext[Any, Any]
PAYMENT = payment_pb2


def usd(minor_units: int) -> Money:
    return Money(currency_code="USD", minor_units=minor_units)


async def no_sleep(seconds: float) -> None:
    return None


@dataclass
class Upstream:
    """What the stand-in Order and Credit services know."""

    orders: dict[str, order_pb2.Order] = field(default_factory=dict)
    holds: dict[str, credit_pb2.Reservation] = field(default_factory=dict)

    def reserved_order(self, minor_units: int, customer_id: str | None = None) -> order_pb2.Order:
        order = order_pb2.Order(
            order_id=new_id(),
            customer_id=customer_id or new_id(),
            total=usd(minor_units),
            status=order_pb2.ORDER_STATUS_RESERVED,
            reservation_id=new_id(),
        )
        expires = Timestamp()
        expires.GetCurrentTime()
        expires.seconds += 900
        self.orders[order.order_id] = order
        self.holds[order.reservation_id] = credit_pb2.Reservation(
            reservation_id=order.reservation_id,
            customer_id=order.customer_id,
            order_id=order.order_id,
            amount=order.total,
            state=credit_pb2.RESERVATION_STATE_ACTIVE,
            expires_at=expires,
        )
        return order

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        async def get_order(
            request: order_service_pb2.GetOrderRequest, context: Context
        ) -> order_service_pb2.GetOrderResponse:
            if request.order_id not in self.orders:
                raise NotFound("no such order", "ORDER_NOT_FOUND")
            return order_service_pb2.GetOrderResponse(order=self.orders[request.order_id])

        async def get_reservation(
            request: credit_service_pb2.GetReservationRequest, context: Context
        ) -> credit_service_pb2.GetReservationResponse:
            if request.reservation_id not in self.holds:
                raise NotFound("no such reservation", "RESERVATION_NOT_FOUND")
            return credit_service_pb2.GetReservationResponse(
                reservation=self.holds[request.reservation_id]
            )

        return [
            grpc.method_handlers_generic_handler(
                "shop.order.v1.OrderService",
                {
                    "GetOrder": grpc.unary_unary_rpc_method_handler(
                        get_order,
                        request_deserializer=order_service_pb2.GetOrderRequest.FromString,
                        response_serializer=order_service_pb2.GetOrderResponse.SerializeToString,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                "shop.credit.v1.CreditService",
                {
                    "GetReservation": grpc.unary_unary_rpc_method_handler(
                        get_reservation,
                        request_deserializer=credit_service_pb2.GetReservationRequest.FromString,
                        response_serializer=(
                            credit_service_pb2.GetReservationResponse.SerializeToString
                        ),
                    )
                },
            ),
        ]


@dataclass
class Harness:
    upstream: Upstream
    stub: payment_service_pb2_grpc.PaymentServiceAsyncStub
    engine: AsyncEngine

    def pay_request(
        self, order: order_pb2.Order, **changes: object
    ) -> payment_service_pb2.ProcessPaymentRequest:
        fields: dict[str, object] = {
            "order_id": order.order_id,
            "customer_id": order.customer_id,
            "reservation_id": order.reservation_id,
            "amount": order.total,
            "request_id": new_id(),
            **changes,
        }
        return payment_service_pb2.ProcessPaymentRequest(**fields)  # type: ignore[arg-type]

    async def payment_rows(self) -> int:
        async with self.engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM payments"))).scalar_one()
        return int(count)


@dataclass
class Running:
    servers: list[GrpcServer]
    channels: list[grpc.aio.Channel]
    stub: payment_service_pb2_grpc.PaymentServiceAsyncStub

    async def stop(self) -> None:
        for channel in self.channels:
            await channel.close()
        for server in self.servers:
            await server.stop(0)


async def start(
    engine: AsyncEngine, upstream: Upstream, dependency_target: str | None = None
) -> Running:
    """The stand-ins on one server, Payment on another, calling them over the network."""
    stand_ins = await create_server(
        "127.0.0.1:0", [lambda server: server.add_generic_rpc_handlers(upstream.handlers())], []
    )
    target = dependency_target or f"127.0.0.1:{stand_ins.port}"
    order_channel = create_channel(target, "shop.order.v1.OrderService")
    credit_channel = create_channel(target, "shop.credit.v1.CreditService")

    def unit_of_work() -> SqlPaymentUnitOfWork:
        return SqlPaymentUnitOfWork(engine, "/shop/payment")

    api = PaymentApi(
        Dependencies(
            unit_of_work=unit_of_work,
            gateway=SimulatedGateway(),
            orders=GrpcOrders(order_channel),
            holds=GrpcHolds(credit_channel),
            retry=RetryPolicy(sleep=no_sleep),
        ),
        Pager(b"test page token key, 32 bytes..", 4 * 1024 * 1024),
        RequestLedger(unit_of_work),
    )
    payment = await create_server(
        "127.0.0.1:0",
        [lambda server: payment_service_pb2_grpc.add_PaymentServiceServicer_to_server(api, server)],
        ["shop.payment.v1.PaymentService"],
    )
    await payment.set_serving(True)
    client = grpc.aio.insecure_channel(f"127.0.0.1:{payment.port}")
    stub = payment_service_pb2_grpc.PaymentServiceStub(client)
    return Running([payment, stand_ins], [client, order_channel, credit_channel], stub)


@pytest.fixture
async def harness(payment_engine: AsyncEngine) -> AsyncIterator[Harness]:
    upstream = Upstream()
    running = await start(payment_engine, upstream)
    yield Harness(upstream, running.stub, payment_engine)
    await running.stop()


async def refused(call: Any) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    info, bad = rich_status(raised.value)
    assert info is not None, raised.value.details()
    return (
        raised.value.code(),
        info.reason,
        [v.field for v in bad.field_violations] if bad is not None else [],
    )


# ProcessPayment ─────────────────────────────────────────────────────────────────────────────


async def test_pay_and_replay_a_request_id(harness: Harness) -> None:
    order = harness.upstream.reserved_order(12000)
    request = harness.pay_request(order, payment_method=PAYMENT.PAYMENT_METHOD_PAYPAL)
    first = await harness.stub.ProcessPayment(request)
    assert first.success
    assert first.error_message == ""
    assert first.payment.status == PAYMENT.PAYMENT_STATUS_SUCCEEDED
    assert first.payment.payment_method == PAYMENT.PAYMENT_METHOD_PAYPAL
    assert first.payment.is_simulated
    assert first.payment.refunded_amount == usd(0)
    assert first.payment.HasField("processed_at")

    again = await harness.stub.ProcessPayment(request)
    assert again == first

    # The same request_id for another request: refused, nothing happens.
    other = harness.upstream.reserved_order(3000)
    reused = harness.pay_request(other, request_id=request.request_id)
    assert await refused(harness.stub.ProcessPayment(reused)) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
        [],
    )
    assert await harness.payment_rows() == 1

    # Another request_id, same order: the first payment, no second charge.
    repeat = await harness.stub.ProcessPayment(harness.pay_request(order))
    assert repeat.success
    assert repeat.payment.payment_id == first.payment.payment_id


async def test_a_decline_is_ok_with_success_false(harness: Harness) -> None:
    order = harness.upstream.reserved_order(10005)
    response = await harness.stub.ProcessPayment(harness.pay_request(order))
    assert not response.success
    assert response.error_message == "Payment failed: Card declined"
    assert response.payment.status == PAYMENT.PAYMENT_STATUS_FAILED
    assert response.payment.error_code == "CARD_DECLINED"
    assert response.payment.payment_method == PAYMENT.PAYMENT_METHOD_CREDIT_CARD  # default


async def test_every_bad_field_is_named(harness: Harness) -> None:
    order = harness.upstream.reserved_order(1000)
    request = harness.pay_request(
        order,
        order_id="nope",
        customer_id="",
        reservation_id="{" + new_id() + "}",
        amount=Money(currency_code="XXX", minor_units=-5),
        request_id="",
    )
    request.payment_method = 42  # type: ignore[assignment]  # open enum: any number arrives
    code, reason, fields = await refused(harness.stub.ProcessPayment(request))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert fields == [
        "order_id",
        "customer_id",
        "reservation_id",
        "amount",
        "amount.currency_code",
        "payment_method",
        "request_id",
    ]
    missing = harness.pay_request(order)
    missing.ClearField("amount")
    assert (await refused(harness.stub.ProcessPayment(missing)))[2] == ["amount"]
    assert await harness.payment_rows() == 0


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("unknown_order", grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND"),
        ("other_customer", grpc.StatusCode.PERMISSION_DENIED, "ORDER_NOT_OWNED"),
        ("amount_mismatch", grpc.StatusCode.INVALID_ARGUMENT, "AMOUNT_MISMATCH"),
        ("order_not_reserved", grpc.StatusCode.FAILED_PRECONDITION, "ORDER_NOT_PAYABLE"),
        ("unknown_hold", grpc.StatusCode.FAILED_PRECONDITION, "RESERVATION_NOT_FOUND"),
        ("other_orders_hold", grpc.StatusCode.FAILED_PRECONDITION, "RESERVATION_MISMATCH"),
        ("expired_hold", grpc.StatusCode.FAILED_PRECONDITION, "RESERVATION_EXPIRED"),
    ],
)
async def test_refusals_map_to_statuses(
    harness: Harness, case: str, code: grpc.StatusCode, reason: str
) -> None:
    order = harness.upstream.reserved_order(3000)
    other = harness.upstream.reserved_order(2000, order.customer_id)
    changes: dict[str, object] = {}
    if case == "unknown_order":
        changes = {"order_id": new_id(), "reservation_id": ""}
    elif case == "other_customer":
        changes = {"customer_id": new_id()}
    elif case == "amount_mismatch":
        changes = {"amount": Money(minor_units=2999)}  # empty currency: USD
    elif case == "order_not_reserved":
        order.status = order_pb2.ORDER_STATUS_PENDING
    elif case == "unknown_hold":
        changes = {"reservation_id": new_id()}
    elif case == "other_orders_hold":
        changes = {"reservation_id": other.reservation_id}
    elif case == "expired_hold":
        harness.upstream.holds[order.reservation_id].state = credit_pb2.RESERVATION_STATE_EXPIRED
    got_code, got_reason, fields = await refused(
        harness.stub.ProcessPayment(harness.pay_request(order, **changes))
    )
    assert (got_code, got_reason) == (code, reason)
    if case == "amount_mismatch":
        assert fields == ["amount"]
    assert await harness.payment_rows() == 0


async def test_an_unreachable_order_service_is_unavailable(payment_engine: AsyncEngine) -> None:
    upstream = Upstream()
    running = await start(payment_engine, upstream, dependency_target="127.0.0.1:9")
    try:
        stub = running.stub
        order = upstream.reserved_order(1000)
        request = payment_service_pb2.ProcessPaymentRequest(
            order_id=order.order_id,
            customer_id=order.customer_id,
            amount=order.total,
            request_id=new_id(),
        )
        code, reason, _ = await refused(stub.ProcessPayment(request, timeout=10))
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "ORDER_UNAVAILABLE")
    finally:
        await running.stop()


# Reads ──────────────────────────────────────────────────────────────────────────────────────


async def test_get_and_list_payments(harness: Harness) -> None:
    customer = new_id()
    paid = []
    for minor_units in (1000, 2000, 3000, 4000, 5000):
        order = harness.upstream.reserved_order(minor_units, customer)
        paid.append((await harness.stub.ProcessPayment(harness.pay_request(order))).payment)
    harness.upstream.reserved_order(700)  # someone else's: never listed

    got = await harness.stub.GetPayment(
        payment_service_pb2.GetPaymentRequest(payment_id=paid[0].payment_id)
    )
    assert got.payment == paid[0]
    assert await refused(
        harness.stub.GetPayment(payment_service_pb2.GetPaymentRequest(payment_id=new_id()))
    ) == (grpc.StatusCode.NOT_FOUND, "PAYMENT_NOT_FOUND", [])

    listed: list[payment_pb2.Payment] = []
    token, pages = "", 0
    while True:
        page = await harness.stub.ListPayments(
            payment_service_pb2.ListPaymentsRequest(
                customer_id=customer, page_size=2, page_token=token
            )
        )
        listed += page.payments
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert [p.payment_id for p in listed] == [p.payment_id for p in reversed(paid)]  # newest first

    by_order = await harness.stub.ListPayments(
        payment_service_pb2.ListPaymentsRequest(order_id=paid[2].order_id)
    )
    assert [p.payment_id for p in by_order.payments] == [paid[2].payment_id]
    assert by_order.next_page_token == ""

    assert await refused(harness.stub.ListPayments(payment_service_pb2.ListPaymentsRequest())) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        ["order_id", "customer_id"],
    )
    first = await harness.stub.ListPayments(
        payment_service_pb2.ListPaymentsRequest(customer_id=customer, page_size=1)
    )
    other_filter = payment_service_pb2.ListPaymentsRequest(
        customer_id=new_id(), page_token=first.next_page_token
    )
    assert (await refused(harness.stub.ListPayments(other_filter)))[2] == ["page_token"]


# RefundPayment ──────────────────────────────────────────────────────────────────────────────


async def test_refunds_over_grpc(harness: Harness) -> None:
    order = harness.upstream.reserved_order(8000)
    payment = (await harness.stub.ProcessPayment(harness.pay_request(order))).payment

    partial_request = payment_service_pb2.RefundPaymentRequest(
        payment_id=payment.payment_id, amount=usd(3000), reason="damaged", request_id=new_id()
    )
    partial = await harness.stub.RefundPayment(partial_request)
    assert partial.refund.status == PAYMENT.REFUND_STATUS_SUCCEEDED
    assert partial.refund.amount == usd(3000)
    assert partial.payment.status == PAYMENT.PAYMENT_STATUS_PARTIALLY_REFUNDED
    assert partial.payment.refunded_amount == usd(3000)
    assert await harness.stub.RefundPayment(partial_request) == partial  # replayed

    too_much = payment_service_pb2.RefundPaymentRequest(
        payment_id=payment.payment_id, amount=usd(5001), request_id=new_id()
    )
    assert await refused(harness.stub.RefundPayment(too_much)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REFUND_EXCEEDS_PAYMENT",
        [],
    )
    reused = payment_service_pb2.RefundPaymentRequest(
        payment_id=payment.payment_id, amount=usd(1), request_id=partial_request.request_id
    )
    assert (await refused(harness.stub.RefundPayment(reused)))[:2] == (
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )

    rest = await harness.stub.RefundPayment(
        payment_service_pb2.RefundPaymentRequest(payment_id=payment.payment_id, request_id=new_id())
    )
    assert rest.refund.amount == usd(5000)
    assert rest.payment.status == PAYMENT.PAYMENT_STATUS_REFUNDED
    assert rest.payment.refunded_amount == usd(8000)

    bad = payment_service_pb2.RefundPaymentRequest(payment_id="x", amount=usd(0))
    assert (await refused(harness.stub.RefundPayment(bad)))[2] == [
        "payment_id",
        "amount",
        "request_id",
    ]
