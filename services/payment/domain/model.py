"""Payments and refunds: the state machines and the refund arithmetic. Pure rules, no I/O.

    PENDING ──▶ SUCCEEDED ──▶ PARTIALLY_REFUNDED ──▶ REFUNDED
       │            └────────────────────────────────▲
       └──▶ FAILED                (PARTIALLY_REFUNDED ⟲ on each further partial refund)

FAILED and REFUNDED are terminal. Invariant: 0 ≤ refunded ≤ amount, and refunded equals the
amount exactly when the payment is REFUNDED.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from services.common.errors import FailedPrecondition
from services.common.money import Money


class PaymentStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"


class PaymentMethod(enum.StrEnum):
    CREDIT_CARD = "CREDIT_CARD"
    DEBIT_CARD = "DEBIT_CARD"
    PAYPAL = "PAYPAL"
    APPLE_PAY = "APPLE_PAY"
    GOOGLE_PAY = "GOOGLE_PAY"


class RefundStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


PAYMENT_TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.PENDING: frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED}),
    PaymentStatus.SUCCEEDED: frozenset({PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}),
    PaymentStatus.PARTIALLY_REFUNDED: frozenset(
        {PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}
    ),
    PaymentStatus.FAILED: frozenset(),
    PaymentStatus.REFUNDED: frozenset(),
}

REFUND_TRANSITIONS: dict[RefundStatus, frozenset[RefundStatus]] = {
    RefundStatus.PENDING: frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED}),
    RefundStatus.SUCCEEDED: frozenset(),
    RefundStatus.FAILED: frozenset(),
}

# A charge is "successful" once money moved, whatever was given back later.
CHARGED = frozenset(
    {PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}
)
REFUNDABLE = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED})


class IllegalTransition(FailedPrecondition):
    def __init__(self, kind: str, subject_id: str, current: str, target: str) -> None:
        super().__init__(
            f"{kind} {subject_id} is {current}; it cannot become {target}",
            "ILLEGAL_STATE_TRANSITION",
            {f"{kind}_id": subject_id, "status": current, "target_status": target},
        )


class PaymentNotRefundable(FailedPrecondition):
    def __init__(self, payment_id: str, status: PaymentStatus) -> None:
        super().__init__(
            f"payment {payment_id} is {status.value}; only SUCCEEDED or PARTIALLY_REFUNDED"
            " payments can be refunded",
            "PAYMENT_NOT_REFUNDABLE",
            {"payment_id": payment_id, "status": status.value},
        )


class RefundExceedsPayment(FailedPrecondition):
    def __init__(self, payment_id: str, requested: Money, refundable: Money) -> None:
        super().__init__(
            f"cannot refund {requested}: only {refundable} of payment {payment_id} is left",
            "REFUND_EXCEEDS_PAYMENT",
            {
                "payment_id": payment_id,
                "requested_minor_units": str(requested.minor_units),
                "refundable_minor_units": str(refundable.minor_units),
            },
        )


class CurrencyMismatch(FailedPrecondition):
    def __init__(self, payment_currency: str, requested: str) -> None:
        super().__init__(
            f"the payment is in {payment_currency}; a refund in {requested} is not possible",
            "CURRENCY_MISMATCH",
            {"payment_currency": payment_currency, "requested_currency": requested},
        )


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    """What the gateway answered for a charge (or the retries gave up with)."""

    succeeded: bool
    transaction_id: str = ""
    error_code: str = ""
    error_message: str = ""
    failure_reason: str = ""
    is_simulated: bool = False
    simulated_response: str = ""


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    succeeded: bool
    transaction_id: str = ""
    error_code: str = ""
    error_message: str = ""


@dataclass
class Payment:
    payment_id: str
    order_id: str
    customer_id: str
    reservation_id: str
    amount: Money
    method: PaymentMethod
    status: PaymentStatus = PaymentStatus.PENDING
    error_code: str = ""
    error_message: str = ""
    failure_reason: str = ""
    transaction_id: str = ""
    is_simulated: bool = False
    simulated_response: str = ""
    refunded: int = 0  # minor units of `amount.currency`
    created_at: datetime | None = None
    processed_at: datetime | None = None

    @property
    def is_charged(self) -> bool:
        return self.status in CHARGED

    @property
    def refunded_money(self) -> Money:
        return Money(self.amount.currency, self.refunded)

    def _move(self, target: PaymentStatus) -> None:
        if target not in PAYMENT_TRANSITIONS[self.status]:
            raise IllegalTransition("payment", self.payment_id, self.status.value, target.value)
        self.status = target

    def settle(self, outcome: ChargeOutcome, at: datetime) -> None:
        """Record the gateway's answer, received `at`: PENDING → SUCCEEDED or FAILED."""
        self._move(PaymentStatus.SUCCEEDED if outcome.succeeded else PaymentStatus.FAILED)
        self.processed_at = at
        self.transaction_id = outcome.transaction_id
        self.error_code = outcome.error_code
        self.error_message = outcome.error_message
        self.failure_reason = outcome.failure_reason
        self.is_simulated = outcome.is_simulated
        self.simulated_response = outcome.simulated_response

    def refundable(self, pending_refunds: int = 0) -> Money:
        """What is left to refund, counting refunds still at the gateway as taken."""
        return Money(
            self.amount.currency, self.amount.minor_units - self.refunded - pending_refunds
        )

    def plan_refund(self, requested: Money | None, pending_refunds: int = 0) -> Money:
        """The amount a new refund may take (`None` = all that is left), or why not."""
        if self.status not in REFUNDABLE:
            raise PaymentNotRefundable(self.payment_id, self.status)
        left = self.refundable(pending_refunds)
        if requested is None:
            if not left.is_positive:
                raise RefundExceedsPayment(self.payment_id, Money(left.currency, 0), left)
            return left
        if requested.currency != self.amount.currency:
            raise CurrencyMismatch(self.amount.currency, requested.currency)
        if not requested.is_positive or left < requested:
            raise RefundExceedsPayment(self.payment_id, requested, left)
        return requested

    def apply_refund(self, amount: Money) -> None:
        """Money went back: add it to `refunded` and move to PARTIALLY_REFUNDED or REFUNDED."""
        if self.status not in REFUNDABLE:
            raise PaymentNotRefundable(self.payment_id, self.status)
        if amount.currency != self.amount.currency:
            raise CurrencyMismatch(self.amount.currency, amount.currency)
        total = self.refunded + amount.minor_units
        if not amount.is_positive or total > self.amount.minor_units:
            raise RefundExceedsPayment(self.payment_id, amount, self.refundable())
        fully = total == self.amount.minor_units
        self._move(PaymentStatus.REFUNDED if fully else PaymentStatus.PARTIALLY_REFUNDED)
        self.refunded = total

    @property
    def fully_refunded(self) -> bool:
        return self.refunded == self.amount.minor_units


@dataclass
class Refund:
    refund_id: str
    payment_id: str
    amount: Money
    reason: str
    request_id: str
    status: RefundStatus = RefundStatus.PENDING
    transaction_id: str = ""
    error_code: str = ""
    error_message: str = ""
    created_at: datetime | None = None
    processed_at: datetime | None = None

    def settle(self, outcome: RefundOutcome) -> None:
        target = RefundStatus.SUCCEEDED if outcome.succeeded else RefundStatus.FAILED
        if target not in REFUND_TRANSITIONS[self.status]:
            raise IllegalTransition("refund", self.refund_id, self.status.value, target.value)
        self.status = target
        self.transaction_id = outcome.transaction_id
        self.error_code = outcome.error_code
        self.error_message = outcome.error_message
