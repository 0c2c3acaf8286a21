"""The deterministic gateway simulator (DESIGN §3), decided by the amount's last two minor
digits, so tests and demos can pick an outcome:

    …05 → CARD_DECLINED        …51 → INSUFFICIENT_FUNDS     …54 → EXPIRED_CARD
    …91 → processor unavailable (transient: GatewayUnavailable, the caller retries)
    anything else → approved, transaction id txn_<16 hex> derived from the payment id

Deterministic by payment id, hence idempotent: charging one payment twice (a recovery after a
crash) gives the same answer and the same transaction id. Refunds always succeed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.common.money import Money
from services.payment.domain.gateway import GatewayUnavailable
from services.payment.domain.model import ChargeOutcome, PaymentMethod, RefundOutcome

PROCESSOR_UNAVAILABLE = 91
PROCESSOR_UNAVAILABLE_RESPONSE = "91 Issuer or switch inoperative"


@dataclass(frozen=True, slots=True)
class Decline:
    issuer_code: str
    error_code: str
    error_message: str
    response: str


# The issuer response codes (ISO 8583) the seed's examples use.
DECLINES: dict[int, Decline] = {
    5: Decline("05", "CARD_DECLINED", "Card declined", "05 Do not honor"),
    51: Decline(
        "51",
        "INSUFFICIENT_FUNDS",
        "Card declined due to insufficient funds",
        "51 Insufficient funds",
    ),
    54: Decline("54", "EXPIRED_CARD", "Card expired", "54 Expired card"),
}


def transaction_id(kind: str, key: str) -> str:
    return "txn_" + hashlib.sha256(f"{kind}:{key}".encode()).hexdigest()[:16]


class SimulatedGateway:
    def __init__(
        self,
        latency_ms: int = 0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.latency_ms = latency_ms
        self._sleep = sleep

    async def _latency(self) -> None:
        if self.latency_ms > 0:
            await self._sleep(self.latency_ms / 1000)

    async def charge(self, payment_id: str, amount: Money, method: PaymentMethod) -> ChargeOutcome:
        await self._latency()
        last_two = amount.minor_units % 100
        if last_two == PROCESSOR_UNAVAILABLE:
            raise GatewayUnavailable(
                "the payment processor is unavailable",
                PROCESSOR_UNAVAILABLE_RESPONSE,
                is_simulated=True,
            )
        decline = DECLINES.get(last_two)
        if decline is not None:
            return ChargeOutcome(
                succeeded=False,
                error_code=decline.error_code,
                error_message=decline.error_message,
                failure_reason=f"The payment gateway returned error code {decline.issuer_code}",
                is_simulated=True,
                simulated_response=decline.response,
            )
        txn = transaction_id("charge", payment_id)
        return ChargeOutcome(
            succeeded=True,
            transaction_id=txn,
            is_simulated=True,
            simulated_response=f"00 Approved - TransactionId: {txn}",
        )

    async def refund(self, refund_id: str, payment_id: str, amount: Money) -> RefundOutcome:
        await self._latency()
        return RefundOutcome(succeeded=True, transaction_id=transaction_id("refund", refund_id))
