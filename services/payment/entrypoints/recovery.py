"""The background job that settles payments and refunds a crash left PENDING, and refunds
payments that succeeded after their order was cancelled (service_layer/compensation.py).

It runs at start and then periodically: with several replicas, one that dies mid-charge
leaves rows that only the others can finish. Settling twice is harmless (the gateway is
idempotent by payment/refund id; the conditional update keeps one outcome and one event)."""

from __future__ import annotations

import asyncio
import logging

from services.payment.service_layer import dependencies, recovery

log = logging.getLogger(__name__)


class PendingSettler:
    def __init__(
        self, deps: dependencies.Dependencies, interval_seconds: float, batch: int = 100
    ) -> None:
        self.deps = deps
        self.interval_seconds = interval_seconds
        self.batch = batch

    async def run(self) -> None:
        while True:
            try:
                while await recovery.settle_stale(self.deps, self.batch) >= self.batch:
                    pass  # a full batch: there may be more right away
                while (
                    await recovery.compensate_cancelled_orders(self.deps, self.batch) >= self.batch
                ):
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as error:  # database or gateway away: try again next round
                log.warning("settling pending payments failed (%s); retrying", error)
            await asyncio.sleep(self.interval_seconds)
