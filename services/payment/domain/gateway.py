"""The payment gateway port. The default adapter is the deterministic simulator
(adapters/simulator.py); a real processor (Stripe, Adyen, …) plugs in behind the same shape.

Both calls must be idempotent by their id (payment id for a charge, refund id for a refund):
a payment left PENDING by a crash is charged again on recovery, and must not be charged twice.
"""

from __future__ import annotations

from typing import Protocol

from services.common.money import Money
from services.payment.domain.model import ChargeOutcome, PaymentMethod, RefundOutcome


class GatewayUnavailable(Exception):
    """A transient processor failure: the call may be retried; nothing was decided."""

    def __init__(self, message: str, response: str = "", is_simulated: bool = False) -> None:
        super().__init__(message)
        self.response = response
        self.is_simulated = is_simulated


class PaymentGateway(Protocol):
    async def charge(
        self, payment_id: str, amount: Money, method: PaymentMethod
    ) -> ChargeOutcome: ...

    async def refund(self, refund_id: str, payment_id: str, amount: Money) -> RefundOutcome: ...
