"""Order and Credit over gRPC: the adapters behind the Orders and Holds ports.

NOT_FOUND is an answer (None); anything else that goes wrong (down, slow, broken) is the
dependency's failure and becomes UNAVAILABLE for our caller, never INTERNAL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import TypeVar

import grpc

from services.common.errors import Unavailable
from services.common.grpc_client import dependency_failure
from services.common.money import DEFAULT_CURRENCY, Money, MoneyError
from services.payment.domain.eligibility import HoldSnapshot, OrderSnapshot
from shop.common.v1.money_pb2 import Money as MoneyProto
from shop.credit.v1 import credit_pb2, credit_service_pb2, credit_service_pb2_grpc
from shop.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc

T = TypeVar("T", bound=int)


def _money(value: MoneyProto, dependency: str) -> Money:
    try:
        return Money(value.currency_code or DEFAULT_CURRENCY, value.minor_units)
    except MoneyError as error:
        raise Unavailable(
            f"{dependency} returned an invalid amount", f"{dependency.upper()}_UNAVAILABLE"
        ) from error


def _state(name_of: Callable[[T], str], value: T, prefix: str) -> str:
    """The enum value's short name (ORDER_STATUS_RESERVED → RESERVED), as the domain knows
    it; a value newer than our stubs is still comparable."""
    try:
        return name_of(value).removeprefix(prefix)
    except ValueError:
        return f"UNKNOWN_{value}"


class GrpcOrders:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = order_service_pb2_grpc.OrderServiceStub(channel)

    async def get_order(self, order_id: str, time_limit: float) -> OrderSnapshot | None:
        try:
            response = await self.stub.GetOrder(
                order_service_pb2.GetOrderRequest(order_id=order_id), timeout=time_limit
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise dependency_failure(error, "order") from error
        order = response.order
        return OrderSnapshot(
            order_id=order.order_id,
            customer_id=order.customer_id,
            total=_money(order.total, "order"),
            status=_state(order_pb2.OrderStatus.Name, order.status, "ORDER_STATUS_"),
            reservation_id=order.reservation_id,
        )


class GrpcHolds:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = credit_service_pb2_grpc.CreditServiceStub(channel)

    async def get_reservation(self, reservation_id: str, time_limit: float) -> HoldSnapshot | None:
        try:
            response = await self.stub.GetReservation(
                credit_service_pb2.GetReservationRequest(reservation_id=reservation_id),
                timeout=time_limit,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise dependency_failure(error, "credit") from error
        hold = response.reservation
        return HoldSnapshot(
            reservation_id=hold.reservation_id,
            customer_id=hold.customer_id,
            order_id=hold.order_id,
            amount=_money(hold.amount, "credit"),
            state=_state(credit_pb2.ReservationState.Name, hold.state, "RESERVATION_STATE_"),
            expires_at=(
                hold.expires_at.ToDatetime(tzinfo=UTC) if hold.HasField("expires_at") else None
            ),
        )
