"""The simulated gateway's rules (DESIGN §3) and the retries around a processor outage."""

from __future__ import annotations

import re

import pytest

from services.common.money import Money
from services.payment.adapters.simulator import SimulatedGateway
from services.payment.domain.gateway import GatewayUnavailable
from services.payment.domain.model import ChargeOutcome, Payment, PaymentMethod, RefundOutcome
from services.payment.service_layer.dependencies import RetryPolicy
from services.payment.service_layer.processing import charge_with_retries
from tests.ids import new_id

CARD = PaymentMethod.CREDIT_CARD


class RecordingSleep:
    """A fake clock: records the pauses instead of taking them."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def usd(minor_units: int) -> Money:
    return Money("USD", minor_units)


@pytest.mark.parametrize(
    ("minor_units", "error_code", "issuer_code"),
    [
        (1005, "CARD_DECLINED", "05"),
        (5, "CARD_DECLINED", "05"),
        (10051, "INSUFFICIENT_FUNDS", "51"),
        (51, "INSUFFICIENT_FUNDS", "51"),
        (2054, "EXPIRED_CARD", "54"),
    ],
)
async def test_declines_by_the_last_two_digits(
    minor_units: int, error_code: str, issuer_code: str
) -> None:
    outcome = await SimulatedGateway().charge(new_id(), usd(minor_units), CARD)
    assert not outcome.succeeded
    assert outcome.error_code == error_code
    assert outcome.error_message
    assert issuer_code in outcome.failure_reason
    assert outcome.simulated_response.startswith(issuer_code + " ")
    assert outcome.is_simulated
    assert outcome.transaction_id == ""


@pytest.mark.parametrize("minor_units", [1, 100, 12000, 10050, 10052, 10090, 10092, 10015, 99])
async def test_other_amounts_succeed_with_a_transaction_id(minor_units: int) -> None:
    outcome = await SimulatedGateway().charge(new_id(), usd(minor_units), CARD)
    assert outcome.succeeded
    assert re.fullmatch(r"txn_[0-9a-f]{16}", outcome.transaction_id)
    assert outcome.transaction_id in outcome.simulated_response
    assert outcome.is_simulated
    assert outcome.error_code == ""


async def test_the_transaction_id_is_deterministic_by_payment_id() -> None:
    gateway = SimulatedGateway()
    payment_id = new_id()
    first = await gateway.charge(payment_id, usd(12000), CARD)
    again = await gateway.charge(payment_id, usd(12000), PaymentMethod.PAYPAL)
    other = await gateway.charge(new_id(), usd(12000), CARD)
    assert first == again  # a recovery re-charging a payment gets the same answer
    assert first.transaction_id != other.transaction_id


async def test_91_is_a_transient_processor_outage() -> None:
    with pytest.raises(GatewayUnavailable) as raised:
        await SimulatedGateway().charge(new_id(), usd(10091), CARD)
    assert raised.value.response.startswith("91")
    assert raised.value.is_simulated


async def test_91_is_retried_with_backoff_then_fails_with_processing_error() -> None:
    class CountingGateway(SimulatedGateway):
        calls = 0

        async def charge(
            self, payment_id: str, amount: Money, method: PaymentMethod
        ) -> ChargeOutcome:
            self.calls += 1
            return await super().charge(payment_id, amount, method)

    gateway, sleep = CountingGateway(), RecordingSleep()
    payment = Payment(new_id(), new_id(), new_id(), "", usd(10091), CARD)
    policy = RetryPolicy(attempts=3, initial_delay=0.1, multiplier=2.0, sleep=sleep)

    outcome = await charge_with_retries(gateway, payment, policy)

    assert gateway.calls == 3
    assert sleep.pauses == pytest.approx([0.1, 0.2])  # exponential, none after the last try
    assert not outcome.succeeded
    assert outcome.error_code == "PROCESSING_ERROR"
    assert outcome.simulated_response.startswith("91")
    assert outcome.is_simulated


async def test_a_transient_failure_that_clears_is_a_success() -> None:
    class FlakyGateway(SimulatedGateway):
        failures = 2

        async def charge(
            self, payment_id: str, amount: Money, method: PaymentMethod
        ) -> ChargeOutcome:
            if self.failures:
                self.failures -= 1
                raise GatewayUnavailable("blip")
            return await super().charge(payment_id, amount, method)

    payment = Payment(new_id(), new_id(), new_id(), "", usd(500), CARD)
    outcome = await charge_with_retries(
        FlakyGateway(), payment, RetryPolicy(sleep=RecordingSleep())
    )
    assert outcome.succeeded


async def test_latency_setting_delays_each_call() -> None:
    sleep = RecordingSleep()
    gateway = SimulatedGateway(latency_ms=250, sleep=sleep)
    await gateway.charge(new_id(), usd(100), CARD)
    await gateway.refund(new_id(), new_id(), usd(100))
    assert sleep.pauses == [0.25, 0.25]

    no_latency = RecordingSleep()
    await SimulatedGateway(latency_ms=0, sleep=no_latency).charge(new_id(), usd(100), CARD)
    assert no_latency.pauses == []


async def test_refunds_succeed_with_a_deterministic_transaction_id() -> None:
    gateway = SimulatedGateway()
    refund_id = new_id()
    outcome = await gateway.refund(refund_id, new_id(), usd(10051))  # declines apply to charges
    assert isinstance(outcome, RefundOutcome)
    assert outcome.succeeded
    assert re.fullmatch(r"txn_[0-9a-f]{16}", outcome.transaction_id)
    assert (await gateway.refund(refund_id, new_id(), usd(1))).transaction_id == (
        outcome.transaction_id
    )


def test_retry_policy_delays() -> None:
    assert RetryPolicy(attempts=4, initial_delay=0.5, multiplier=3).delays() == [0.5, 1.5, 4.5]
    assert RetryPolicy(attempts=1).delays() == []
