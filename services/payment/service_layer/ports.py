"""What the payment use cases need from the outside world, as ports: Order and Credit (read
over gRPC in production, fakes in tests). The gateway's port is domain/gateway.py; the
caller's time budget is services.common.grpc_client.Deadline."""

from __future__ import annotations

from typing import Protocol

from services.payment.domain.eligibility import HoldSnapshot, OrderSnapshot


class Orders(Protocol):
    async def get_order(self, order_id: str, time_limit: float) -> OrderSnapshot | None:
        """The order, or None when Order says it does not exist."""
        ...


class Holds(Protocol):
    async def get_reservation(self, reservation_id: str, time_limit: float) -> HoldSnapshot | None:
        """The credit hold, or None when Credit says it does not exist."""
        ...
