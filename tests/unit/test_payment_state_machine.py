"""The payment and refund state machines, the refund arithmetic and the eligibility rules."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import FailedPrecondition
from services.common.money import Money
from services.payment.adapters.proto_mapping import method_from_proto
from services.payment.domain import eligibility
from services.payment.domain.eligibility import HoldSnapshot, OrderSnapshot
from services.payment.domain.model import (
    PAYMENT_TRANSITIONS,
    REFUND_TRANSITIONS,
    ChargeOutcome,
    CurrencyMismatch,
    IllegalTransition,
    Payment,
    PaymentMethod,
    PaymentNotRefundable,
    PaymentStatus,
    Refund,
    RefundExceedsPayment,
    RefundOutcome,
    RefundStatus,
)
from tests.ids import new_id

S = PaymentStatus
LEGAL = {
    (S.PENDING, S.SUCCEEDED),
    (S.PENDING, S.FAILED),
    (S.SUCCEEDED, S.PARTIALLY_REFUNDED),
    (S.SUCCEEDED, S.REFUNDED),
    (S.PARTIALLY_REFUNDED, S.PARTIALLY_REFUNDED),
    (S.PARTIALLY_REFUNDED, S.REFUNDED),
}
APPROVED = ChargeOutcome(succeeded=True, transaction_id="txn_0123456789abcdef", is_simulated=True)
DECLINED = ChargeOutcome(
    succeeded=False,
    error_code="INSUFFICIENT_FUNDS",
    error_message="Card declined due to insufficient funds",
    failure_reason="The payment gateway returned error code 51",
)


def usd(minor_units: int) -> Money:
    return Money("USD", minor_units)


def payment(status: PaymentStatus = S.PENDING, amount: int = 10000, refunded: int = 0) -> Payment:
    return Payment(
        new_id(),
        new_id(),
        new_id(),
        "",
        usd(amount),
        PaymentMethod.CREDIT_CARD,
        status=status,
        refunded=refunded,
    )


def test_the_transition_table_is_exactly_the_design() -> None:
    table = {(a, b) for a, targets in PAYMENT_TRANSITIONS.items() for b in targets}
    assert table == LEGAL
    assert set(PAYMENT_TRANSITIONS) == set(PaymentStatus)


def test_pending_settles_to_succeeded_or_failed() -> None:
    ok = payment()
    ok.settle(APPROVED, at=NOW)
    assert ok.status is S.SUCCEEDED
    assert ok.transaction_id == APPROVED.transaction_id
    assert ok.processed_at == NOW
    assert ok.is_charged

    declined = payment()
    declined.settle(DECLINED, at=NOW)
    assert declined.status is S.FAILED
    assert (declined.error_code, declined.failure_reason) == (
        "INSUFFICIENT_FUNDS",
        "The payment gateway returned error code 51",
    )
    assert not declined.is_charged


@pytest.mark.parametrize("status", [s for s in S if s is not S.PENDING])
@pytest.mark.parametrize("outcome", [APPROVED, DECLINED])
def test_only_a_pending_payment_settles(status: PaymentStatus, outcome: ChargeOutcome) -> None:
    p = payment(status, refunded={S.PARTIALLY_REFUNDED: 1, S.REFUNDED: 10000}.get(status, 0))
    with pytest.raises(IllegalTransition) as raised:
        p.settle(outcome, at=NOW)
    assert raised.value.reason == "ILLEGAL_STATE_TRANSITION"
    assert isinstance(raised.value, FailedPrecondition)
    assert p.status is status


@pytest.mark.parametrize(("current", "target"), sorted(set(itertools.product(S, S)) - LEGAL))
def test_every_illegal_transition_is_refused(current: PaymentStatus, target: PaymentStatus) -> None:
    p = payment(current)
    with pytest.raises(IllegalTransition):
        p._move(target)
    assert p.status is current


@pytest.mark.parametrize(("current", "target"), sorted(LEGAL))
def test_every_legal_transition_is_allowed(current: PaymentStatus, target: PaymentStatus) -> None:
    p = payment(current)
    p._move(target)
    assert p.status is target


def test_partial_refunds_then_the_rest() -> None:
    p = payment(S.SUCCEEDED, amount=8000)
    p.apply_refund(usd(3000))
    assert (p.status, p.refunded) == (S.PARTIALLY_REFUNDED, 3000)
    p.apply_refund(usd(1000))
    assert (p.status, p.refunded) == (S.PARTIALLY_REFUNDED, 4000)
    assert p.plan_refund(None) == usd(4000)  # unset amount: everything left
    p.apply_refund(usd(4000))
    assert (p.status, p.refunded) == (S.REFUNDED, 8000)
    assert p.fully_refunded
    assert p.is_charged  # money moved once; some went back


def test_a_single_full_refund_goes_straight_to_refunded() -> None:
    p = payment(S.SUCCEEDED, amount=500)
    p.apply_refund(p.plan_refund(None))
    assert (p.status, p.refunded) == (S.REFUNDED, 500)


def test_refunds_never_exceed_the_amount() -> None:
    p = payment(S.PARTIALLY_REFUNDED, amount=8000, refunded=3000)
    with pytest.raises(RefundExceedsPayment) as raised:
        p.plan_refund(usd(5001))
    assert raised.value.reason == "REFUND_EXCEEDS_PAYMENT"
    assert raised.value.metadata["refundable_minor_units"] == "5000"
    with pytest.raises(RefundExceedsPayment):
        p.apply_refund(usd(5001))
    assert (p.status, p.refunded) == (S.PARTIALLY_REFUNDED, 3000)
    assert p.plan_refund(usd(5000)) == usd(5000)


def test_pending_refunds_count_against_what_is_left() -> None:
    p = payment(S.SUCCEEDED, amount=10000)
    assert p.plan_refund(usd(4000), pending_refunds=6000) == usd(4000)
    with pytest.raises(RefundExceedsPayment):
        p.plan_refund(usd(4001), pending_refunds=6000)
    assert p.plan_refund(None, pending_refunds=2500) == usd(7500)
    with pytest.raises(RefundExceedsPayment):
        p.plan_refund(None, pending_refunds=10000)


@pytest.mark.parametrize("status", [S.PENDING, S.FAILED, S.REFUNDED])
def test_only_charged_payments_with_money_left_are_refundable(status: PaymentStatus) -> None:
    p = payment(status, refunded=10000 if status is S.REFUNDED else 0)
    with pytest.raises(PaymentNotRefundable) as raised:
        p.plan_refund(usd(1))
    assert raised.value.reason == "PAYMENT_NOT_REFUNDABLE"
    with pytest.raises(PaymentNotRefundable):
        p.apply_refund(usd(1))


def test_a_refund_must_be_in_the_payment_currency() -> None:
    p = payment(S.SUCCEEDED)
    with pytest.raises(CurrencyMismatch):
        p.plan_refund(Money("EUR", 100))
    with pytest.raises(CurrencyMismatch):
        p.apply_refund(Money("EUR", 100))


def test_refund_state_machine() -> None:
    assert {(a, b) for a, t in REFUND_TRANSITIONS.items() for b in t} == {
        (RefundStatus.PENDING, RefundStatus.SUCCEEDED),
        (RefundStatus.PENDING, RefundStatus.FAILED),
    }
    refund = Refund(new_id(), new_id(), usd(100), "", new_id())
    refund.settle(RefundOutcome(succeeded=True, transaction_id="txn_1"))
    assert refund.status is RefundStatus.SUCCEEDED
    with pytest.raises(IllegalTransition):
        refund.settle(RefundOutcome(succeeded=False, error_code="X"))
    failed = Refund(new_id(), new_id(), usd(100), "", new_id())
    failed.settle(RefundOutcome(succeeded=False, error_code="PROCESSING_ERROR"))
    assert failed.status is RefundStatus.FAILED
    with pytest.raises(IllegalTransition):
        failed.settle(RefundOutcome(succeeded=True))


# Eligibility (ProcessPayment steps 3 and 4) ──────────────────────────────────────────────────

NOW = datetime(2026, 3, 4, 15, 30, tzinfo=UTC)


def order(customer_id: str, status: str = "RESERVED") -> OrderSnapshot:
    return OrderSnapshot(new_id(), customer_id, usd(3000), status, new_id())


def hold(o: OrderSnapshot, **changes: object) -> HoldSnapshot:
    fields: dict[str, object] = {
        "reservation_id": o.reservation_id,
        "customer_id": o.customer_id,
        "order_id": o.order_id,
        "amount": o.total,
        "state": "ACTIVE",
        "expires_at": NOW + timedelta(minutes=10),
        **changes,
    }
    return HoldSnapshot(**fields)  # type: ignore[arg-type]


def test_a_reserved_order_of_the_customer_for_its_total_is_payable() -> None:
    customer = new_id()
    o = order(customer)
    eligibility.check_order(o, customer, usd(3000))
    eligibility.check_hold(hold(o), customer, o.order_id, NOW)


def test_order_rules() -> None:
    customer = new_id()
    o = order(customer)
    with pytest.raises(eligibility.OrderNotOwned):
        eligibility.check_order(o, new_id(), usd(3000))
    with pytest.raises(eligibility.AmountMismatch) as mismatch:
        eligibility.check_order(o, customer, usd(2999))
    assert [v.field for v in mismatch.value.violations] == ["amount"]
    with pytest.raises(eligibility.AmountMismatch):
        eligibility.check_order(o, customer, Money("EUR", 3000))
    with pytest.raises(eligibility.OrderNotPayable) as not_payable:
        eligibility.check_order(order(customer, "REJECTED"), customer, usd(3000))
    assert not_payable.value.metadata["order_status"] == "ORDER_STATUS_REJECTED"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"state": "EXPIRED"}, "RESERVATION_EXPIRED"),
        ({"expires_at": NOW}, "RESERVATION_EXPIRED"),
        ({"state": "RELEASED"}, "RESERVATION_NOT_ACTIVE"),
        ({"state": "CAPTURED"}, "RESERVATION_NOT_ACTIVE"),
        ({"customer_id": new_id()}, "RESERVATION_MISMATCH"),
        ({"order_id": new_id()}, "RESERVATION_MISMATCH"),
    ],
)
def test_hold_rules(changes: dict[str, object], reason: str) -> None:
    customer = new_id()
    o = order(customer)
    with pytest.raises(FailedPrecondition) as raised:
        eligibility.check_hold(hold(o, **changes), customer, o.order_id, NOW)
    assert raised.value.reason == reason


def test_payment_methods_from_the_wire() -> None:
    assert method_from_proto(0) is PaymentMethod.CREDIT_CARD  # unspecified: the default
    assert method_from_proto(3) is PaymentMethod.PAYPAL
    assert method_from_proto(99) is None
