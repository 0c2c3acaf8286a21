"""A small client of the whole mesh for end-to-end tests: the three public APIs, plus
helpers to wait for the saga to reach a state and to check the credit books."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
import nats
from google.protobuf.message import Message
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.common.events import EVENT_TYPES, STREAMS
from shop.common.v1.money_pb2 import Money
from shop.credit.v1 import credit_pb2, credit_service_pb2, credit_service_pb2_grpc
from shop.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from shop.payment.v1 import payment_pb2, payment_service_pb2, payment_service_pb2_grpc
from tests.ids import new_id

T = TypeVar("T")


def usd(minor_units: int) -> Money:
    return Money(currency_code="USD", minor_units=minor_units)


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 20.0
) -> T:
    """Poll `probe` until `done(result)`; the saga is asynchronous by design."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await probe()
        if done(result):
            return result
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached after {timeout}s; last: {result}")
        await asyncio.sleep(0.1)


@dataclass
class Shop:
    order: order_service_pb2_grpc.OrderServiceAsyncStub
    credit: credit_service_pb2_grpc.CreditServiceAsyncStub
    payment: payment_service_pb2_grpc.PaymentServiceAsyncStub
    customers: set[str] = field(default_factory=set)

    @classmethod
    def connect(cls, channels: dict[str, grpc.aio.Channel]) -> Shop:
        return cls(
            order_service_pb2_grpc.OrderServiceStub(channels["order"]),
            credit_service_pb2_grpc.CreditServiceStub(channels["credit"]),
            payment_service_pb2_grpc.PaymentServiceStub(channels["payment"]),
        )

    def new_customer(self) -> str:
        customer = new_id()
        self.customers.add(customer)
        return customer

    async def top_up(self, customer: str, minor_units: int) -> credit_pb2.CreditAccount:
        response = await self.credit.TopUpCredits(
            credit_service_pb2.TopUpCreditsRequest(
                customer_id=customer, amount=usd(minor_units), request_id=new_id()
            )
        )
        return response.account

    async def account(self, customer: str) -> credit_pb2.CreditAccount:
        request = credit_service_pb2.GetCreditAccountRequest(customer_id=customer)
        return (await self.credit.GetCreditAccount(request)).account

    async def create_order(
        self, customer: str, unit_price: int, quantity: int = 1
    ) -> order_pb2.Order:
        response = await self.order.CreateOrder(
            order_service_pb2.CreateOrderRequest(
                customer_id=customer,
                items=[
                    order_pb2.OrderItem(
                        sku="SKU-BOOK-1", quantity=quantity, unit_price=usd(unit_price)
                    )
                ],
                request_id=new_id(),
            )
        )
        return response.order

    async def get_order(self, order_id: str) -> order_pb2.Order:
        return (
            await self.order.GetOrder(order_service_pb2.GetOrderRequest(order_id=order_id))
        ).order

    async def order_in(
        self, order_id: str, *statuses: int, timeout: float = 20.0
    ) -> order_pb2.Order:
        return await eventually(
            lambda: self.get_order(order_id), lambda o: o.status in statuses, timeout
        )

    async def reserved_order(self, customer: str, unit_price: int) -> order_pb2.Order:
        created = await self.create_order(customer, unit_price)
        return await self.order_in(created.order_id, order_pb2.ORDER_STATUS_RESERVED)

    async def reservation(self, reservation_id: str) -> credit_pb2.Reservation:
        request = credit_service_pb2.GetReservationRequest(reservation_id=reservation_id)
        return (await self.credit.GetReservation(request)).reservation

    async def reservation_in(self, reservation_id: str, state: int) -> credit_pb2.Reservation:
        return await eventually(
            lambda: self.reservation(reservation_id), lambda r: r.state == state
        )

    def payment_request(
        self, order: order_pb2.Order, **overrides: object
    ) -> payment_service_pb2.ProcessPaymentRequest:
        fields: dict[str, object] = {
            "order_id": order.order_id,
            "customer_id": order.customer_id,
            "reservation_id": order.reservation_id,
            "amount": order.total,
            "payment_method": payment_pb2.PAYMENT_METHOD_CREDIT_CARD,
            "request_id": new_id(),
            **overrides,
        }
        return payment_service_pb2.ProcessPaymentRequest(**fields)  # type: ignore[arg-type]

    async def pay(
        self, order: order_pb2.Order, **overrides: object
    ) -> payment_service_pb2.ProcessPaymentResponse:
        return await self.payment.ProcessPayment(self.payment_request(order, **overrides))

    async def payments_of(self, order_id: str) -> list[payment_pb2.Payment]:
        request = payment_service_pb2.ListPaymentsRequest(order_id=order_id)
        return list((await self.payment.ListPayments(request)).payments)

    async def refund(
        self, payment_id: str, minor_units: int | None = None
    ) -> payment_service_pb2.RefundPaymentResponse:
        request = payment_service_pb2.RefundPaymentRequest(
            payment_id=payment_id, reason="customer changed their mind", request_id=new_id()
        )
        if minor_units is not None:
            request.amount.CopyFrom(usd(minor_units))
        return await self.payment.RefundPayment(request)

    async def reservations_of(self, customer: str) -> list[credit_pb2.Reservation]:
        found: list[credit_pb2.Reservation] = []
        token = ""
        while True:
            response = await self.credit.ListReservations(
                credit_service_pb2.ListReservationsRequest(
                    customer_id=customer, page_size=100, page_token=token
                )
            )
            found += response.reservations
            token = response.next_page_token
            if not token:
                return found

    async def check_books(self) -> None:
        """For every customer seen: topped up = available + reserved + spent, nothing
        negative, and `reserved` is exactly what the customer's active holds add up to."""
        for customer in self.customers:
            try:
                account = await self.account(customer)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:  # no account: nothing to check
                    raise
                continue
            parts = (account.available, account.reserved, account.spent)
            assert all(p.minor_units >= 0 for p in parts), account
            assert sum(p.minor_units for p in parts) == account.topped_up.minor_units, account
            await self._check_holds_match(customer)

    async def _check_holds_match(self, customer: str) -> None:
        """`reserved` is the sum of the active holds. The two come from two reads, and a late
        event (a release, a capture) may land between them: compare only a pair of reads
        the account did not change across."""
        for _ in range(50):
            before = await self.account(customer)
            holds = await self.reservations_of(customer)
            if await self.account(customer) == before:
                break
            await asyncio.sleep(0.1)
        active = sum(
            r.amount.minor_units for r in holds if r.state == credit_pb2.RESERVATION_STATE_ACTIVE
        )
        assert before.reserved.minor_units == active, (before, holds)


async def events_of(
    nats_url: str, customer: str
) -> dict[str, list[tuple[Message, dict[str, str]]]]:
    """Every event of `customer` on the streams, by subject, with its headers."""
    nc = await nats.connect(nats_url)
    found: dict[str, list[tuple[Message, dict[str, str]]]] = {}
    try:
        js = nc.jetstream()
        for stream, subjects in STREAMS.items():
            sub = await js.pull_subscribe(
                subjects, stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
            )
            while True:
                try:
                    batch = await sub.fetch(500, timeout=1)
                except TimeoutError:
                    break
                for msg in batch:
                    headers = dict(msg.headers or {})
                    cls = EVENT_TYPES.get(headers.get("ce-type", ""))
                    if cls is None:
                        continue
                    event = cls.FromString(msg.data)
                    if getattr(event, "customer_id", "") == customer:
                        found.setdefault(msg.subject, []).append((event, headers))
                    await msg.ack()
            await sub.unsubscribe()
    finally:
        await nc.close()
    return found
