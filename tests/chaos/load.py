"""Clients that behave as the contract asks under faults: retry UNAVAILABLE and
DEADLINE_EXCEEDED with the same request_id, and poll for the saga's outcome."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from shop.credit.v1 import credit_service_pb2
from shop.order.v1 import order_pb2, order_service_pb2
from shop.payment.v1 import payment_pb2, payment_service_pb2
from tests.e2e.shop import Shop, usd
from tests.ids import new_id

T = TypeVar("T")

TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
S = order_pb2.OrderStatus
FINAL = (
    order_pb2.ORDER_STATUS_PAID,
    order_pb2.ORDER_STATUS_REJECTED,
    order_pb2.ORDER_STATUS_CANCELLED,
    order_pb2.ORDER_STATUS_PAYMENT_FAILED,
    order_pb2.ORDER_STATUS_REFUNDED,
)


def approved_price(i: int) -> int:
    """A price the simulated gateway approves (it declines …05, …51, …54, fails …91)."""
    return 1_000 + 10 * (i % 500)


@dataclass
class Tracker:
    """What clients have added to each wallet (acknowledged top-ups only)."""

    topped_up: Counter[str] = field(default_factory=Counter)
    transient_errors: Counter[str] = field(default_factory=Counter)


async def retrying(
    call: Callable[[], Awaitable[T]],
    tracker: Tracker | None = None,
    timeout: float = 90.0,
    rpc_timeout: float = 10.0,
) -> T:
    """Retry transient failures (same request, so the same request_id) until `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.1
    while True:
        try:
            return await asyncio.wait_for(call(), rpc_timeout)
        except TimeoutError:
            code_name = "CLIENT_TIMEOUT"
        except grpc.aio.AioRpcError as error:
            if error.code() not in TRANSIENT:
                raise
            code_name = error.code().name
        if tracker is not None:
            tracker.transient_errors[code_name] += 1
        if loop.time() > deadline:
            raise AssertionError(f"still {code_name} after {timeout}s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def top_up(shop: Shop, tracker: Tracker, customer: str, minor_units: int) -> None:
    request = credit_service_pb2.TopUpCreditsRequest(
        customer_id=customer, amount=usd(minor_units), request_id=new_id()
    )
    await retrying(lambda: shop.credit.TopUpCredits(request), tracker)
    tracker.topped_up[customer] += minor_units


async def create_order(
    shop: Shop, tracker: Tracker, customer: str, unit_price: int, quantity: int = 1
) -> order_pb2.Order:
    request = order_service_pb2.CreateOrderRequest(
        customer_id=customer,
        items=[order_pb2.OrderItem(sku="SKU-CHAOS", quantity=quantity, unit_price=usd(unit_price))],
        request_id=new_id(),
    )
    return (await retrying(lambda: shop.order.CreateOrder(request), tracker)).order


async def order_until(
    shop: Shop,
    tracker: Tracker,
    order_id: str,
    statuses: tuple[int, ...],
    timeout: float = 90.0,
) -> order_pb2.Order:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    request = order_service_pb2.GetOrderRequest(order_id=order_id)
    while True:
        order = (await retrying(lambda: shop.order.GetOrder(request), tracker)).order
        if order.status in statuses:
            return order
        if loop.time() > deadline:
            raise AssertionError(
                f"order {order_id} is {S.Name(order.status)}, wanted"
                f" {[S.Name(s) for s in statuses]} after {timeout}s"  # type: ignore[arg-type]
            )
        await asyncio.sleep(0.2)


async def pay(
    shop: Shop,
    tracker: Tracker,
    order: order_pb2.Order,
    request_id: str | None = None,
    retry: bool = True,
) -> payment_service_pb2.ProcessPaymentResponse:
    request = payment_service_pb2.ProcessPaymentRequest(
        order_id=order.order_id,
        customer_id=order.customer_id,
        reservation_id=order.reservation_id,
        amount=order.total,
        payment_method=payment_pb2.PAYMENT_METHOD_CREDIT_CARD,
        request_id=request_id or new_id(),
    )
    if not retry:
        return await shop.payment.ProcessPayment(request, timeout=30)
    return await retrying(lambda: shop.payment.ProcessPayment(request), tracker)


async def saga(
    shop: Shop, tracker: Tracker, customer: str, unit_price: int, timeout: float = 120.0
) -> int:
    """One whole order: create, wait for the hold, pay, wait for PAID. The final status."""
    order = await create_order(shop, tracker, customer, unit_price)
    order = await order_until(
        shop,
        tracker,
        order.order_id,
        (order_pb2.ORDER_STATUS_RESERVED, *FINAL),
        timeout,
    )
    if order.status != order_pb2.ORDER_STATUS_RESERVED:
        return int(order.status)
    await pay(shop, tracker, order)
    order = await order_until(shop, tracker, order.order_id, FINAL, timeout)
    return int(order.status)
