"""What every Payment use case runs with: its ports, and the policies for the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from services.payment.domain.gateway import PaymentGateway
from services.payment.service_layer.ports import Holds, Orders, PaymentUnitOfWork


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient gateway failures."""

    attempts: int = 3
    initial_delay: float = 0.1
    multiplier: float = 2.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def delays(self) -> list[float]:
        """The pauses between attempts (one fewer than the attempts)."""
        return [self.initial_delay * self.multiplier**n for n in range(self.attempts - 1)]


@dataclass(frozen=True)
class PollPolicy:
    """How a duplicate waits for the payment another call is charging."""

    initial_interval: float = 0.02
    max_interval: float = 0.25
    max_wait: float = 30.0  # when the caller set no deadline


@dataclass
class Dependencies:
    unit_of_work: Callable[[], PaymentUnitOfWork]
    gateway: PaymentGateway
    orders: Orders
    holds: Holds
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll: PollPolicy = field(default_factory=PollPolicy)
    # A PENDING row older than this is presumed orphaned by a crash; whoever sees it may
    # settle it (the gateway is idempotent by payment id; the conditional update keeps one
    # outcome and one event).
    stale_after_seconds: float = 10.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # One gateway call's bound (PAYMENT_GATEWAY_TIMEOUT_SECONDS): a charge that times out
    # has an unknown outcome and stays PENDING for recovery (it may have been taken).
    gateway_timeout_seconds: float = 10.0
    recovery_concurrency: int = 8  # payments (and refunds) recovery settles at once
