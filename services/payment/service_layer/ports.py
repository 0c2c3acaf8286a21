"""What the payment use cases need from the outside world, as ports: Order and Credit (read
over gRPC in production, fakes in tests), the gateway, and the caller's time budget."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from services.common.errors import DeadlineExceeded
from services.common.grpc_client import DEADLINE_MARGIN, DEFAULT_CALL_TIMEOUT
from services.payment.domain.eligibility import HoldSnapshot, OrderSnapshot


class Orders(Protocol):
    async def get_order(self, order_id: str, time_limit: float) -> OrderSnapshot | None:
        """The order, or None when Order says it does not exist."""
        ...


class Holds(Protocol):
    async def get_reservation(self, reservation_id: str, time_limit: float) -> HoldSnapshot | None:
        """The credit hold, or None when Credit says it does not exist."""
        ...


@dataclass(frozen=True, slots=True)
class Deadline:
    """The caller's deadline as event-loop time (None: the caller set none)."""

    at: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        if seconds is None:
            return cls(None)
        return cls(asyncio.get_running_loop().time() + seconds)

    def remaining(self) -> float | None:
        if self.at is None:
            return None
        return self.at - asyncio.get_running_loop().time()

    def call_timeout(self, default: float = DEFAULT_CALL_TIMEOUT) -> float:
        """The timeout of an outgoing call: ours, capped by what is left of the caller's."""
        remaining = self.remaining()
        if remaining is None:
            return default
        budget = remaining - DEADLINE_MARGIN
        if budget <= 0:
            raise DeadlineExceeded("the caller's deadline has passed", "DEADLINE_EXCEEDED")
        return min(default, budget)
