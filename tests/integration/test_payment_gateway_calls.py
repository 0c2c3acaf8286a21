"""The gateway call site and recovery on real PostgreSQL: a gateway call is bounded by a
timeout, a charge whose outcome is unknown stays PENDING for recovery (it may have been
charged), the processor's own words never reach a payment, and recovery settles in parallel
within a bound. The fixtures are test_payment_handlers.py's."""

# ruff: noqa: F811 (the `world` fixture, imported, is every test's parameter)

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from services.common.money import Money
from services.payment.domain.gateway import GatewayUnavailable
from services.payment.domain.model import (
    ChargeOutcome,
    Payment,
    PaymentMethod,
    PaymentStatus,
    RefundOutcome,
)
from services.payment.service_layer import errors, recovery, refunds
from tests.integration.test_payment_handlers import (
    CountingGateway,
    World,
    refund_cmd,
    world,  # noqa: F401
)

pytestmark = pytest.mark.integration

SECRET_DETAIL = "connect to 10.9.8.7:443 refused (api key sk_live_abc)"


class HangingGateway(CountingGateway):
    """Takes the call and never answers: the money may or may not have moved."""

    async def charge(self, payment_id: str, amount: Money, method: PaymentMethod) -> ChargeOutcome:
        self.charges += 1
        await asyncio.sleep(5)
        raise AssertionError("the gateway call was not bounded")

    async def refund(self, refund_id: str, payment_id: str, amount: Money) -> RefundOutcome:
        self.refunds += 1
        await asyncio.sleep(5)
        raise AssertionError("the gateway call was not bounded")


class HangsThenDown(CountingGateway):
    """The first call hangs (it may have charged), the later ones find the processor down."""

    async def charge(self, payment_id: str, amount: Money, method: PaymentMethod) -> ChargeOutcome:
        self.charges += 1
        if self.charges == 1:
            await asyncio.sleep(5)
        raise GatewayUnavailable(SECRET_DETAIL)


class DownGateway(CountingGateway):
    async def charge(self, payment_id: str, amount: Money, method: PaymentMethod) -> ChargeOutcome:
        self.charges += 1
        raise GatewayUnavailable(SECRET_DETAIL, "91 Issuer or switch inoperative")


async def age_everything(world: World) -> None:
    async with world.engine.begin() as conn:
        await conn.execute(text("UPDATE payments SET created_at = now() - interval '1 minute'"))
        await conn.execute(text("UPDATE refunds SET created_at = now() - interval '1 minute'"))


async def stored(world: World, payment_id: str) -> Payment:
    async with world.deps.unit_of_work() as uow:
        payment = await uow.payments.get(payment_id)
    assert payment is not None
    return payment


async def test_a_charge_that_times_out_stays_pending_until_recovery_charges_it(
    world: World,
) -> None:
    world.deps.gateway_timeout_seconds = 0.05
    world.deps.gateway = HangingGateway()
    order = world.reserved_order(4200)
    with pytest.raises(errors.GatewayDown):
        await world.pay(order)
    assert world.deps.gateway.charges == world.deps.retry.attempts  # each attempt timed out
    # It may have been charged: never FAILED, no event, the order is not told anything.
    assert await world.scalar("SELECT status FROM payments") == "PENDING"
    assert await world.events("payments.failed") == []

    world.deps.gateway = world.gateway  # the processor answers again
    await age_everything(world)
    assert await recovery.settle_stale(world.deps) == 1
    assert await world.scalar("SELECT status FROM payments") == "SUCCEEDED"
    assert len(await world.events("payments.succeeded")) == 1


async def test_a_timeout_then_an_outage_is_still_an_unknown_outcome(world: World) -> None:
    world.deps.gateway_timeout_seconds = 0.05
    world.deps.gateway = HangsThenDown()
    with pytest.raises(errors.GatewayDown):
        await world.pay(world.reserved_order(4200))
    assert await world.scalar("SELECT status FROM payments") == "PENDING"


async def test_recovery_leaves_a_charge_that_still_times_out_pending(world: World) -> None:
    world.deps.gateway_timeout_seconds = 0.05
    world.deps.gateway = HangingGateway()
    with pytest.raises(errors.GatewayDown):
        await world.pay(world.reserved_order(4200))
    await age_everything(world)
    assert await recovery.settle_stale(world.deps) == 0  # not settled, not counted, no error
    assert await world.scalar("SELECT status FROM payments") == "PENDING"


async def test_a_refund_that_times_out_stays_pending(world: World) -> None:
    payment = await world.pay(world.reserved_order(6000))
    world.deps.gateway_timeout_seconds = 0.05
    world.deps.gateway = HangingGateway()
    with pytest.raises(errors.GatewayDown):
        await refunds.refund_payment(world.deps, refund_cmd(payment.payment_id, 2500))
    assert await world.scalar("SELECT status FROM refunds") == "PENDING"


async def test_the_processors_words_never_reach_the_payment(world: World) -> None:
    world.deps.gateway = DownGateway()
    payment = await world.pay(world.reserved_order(4200))
    assert payment.status is PaymentStatus.FAILED  # every attempt said: nothing was decided
    assert payment.error_code == "PROCESSING_ERROR"
    assert payment.failure_reason == "The payment gateway was unavailable after 3 attempts"
    for text_ in (payment.failure_reason, payment.error_message):
        assert "10.9.8.7" not in text_
        assert "sk_live" not in text_
    (event,) = await world.events("payments.failed")
    assert b"sk_live" not in event
    assert (await stored(world, payment.payment_id)).failure_reason == payment.failure_reason


async def test_recovery_settles_in_parallel_within_its_bound(world: World) -> None:
    class Measuring(CountingGateway):
        active = 0
        most = 0

        async def charge(
            self, payment_id: str, amount: Money, method: PaymentMethod
        ) -> ChargeOutcome:
            Measuring.active += 1
            Measuring.most = max(Measuring.most, Measuring.active)
            await asyncio.sleep(0.05)
            Measuring.active -= 1
            return await super().charge(payment_id, amount, method)

    world.gateway.gate.clear()  # twelve payments left PENDING by a crash
    crashed = [asyncio.ensure_future(world.pay(world.reserved_order(4200))) for _ in range(12)]
    await asyncio.sleep(0.3)
    for call in crashed:
        call.cancel()
    await asyncio.gather(*crashed, return_exceptions=True)
    assert await world.scalar("SELECT count(*) FROM payments WHERE status = 'PENDING'") == 12

    world.deps.recovery_concurrency = 4
    world.deps.gateway = Measuring()
    await age_everything(world)
    assert await recovery.settle_stale(world.deps) == 12
    assert Measuring.most == 4
    assert await world.scalar("SELECT count(*) FROM payments WHERE status = 'SUCCEEDED'") == 12
