"""The credit account: a prepaid wallet whose holds behave like card authorizations.

Pure rules, no I/O. Invariant after every operation:
    topped_up = available + reserved + spent, and none of them is negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.common.errors import FailedPrecondition
from services.common.money import MAX_MINOR_UNITS, Money


class CurrencyMismatch(FailedPrecondition):
    def __init__(self, account: str, requested: str) -> None:
        super().__init__(
            f"the account holds {account}; {requested} cannot be used with it",
            "CURRENCY_MISMATCH",
            {"account_currency": account, "requested_currency": requested},
        )


class InsufficientCredits(FailedPrecondition):
    def __init__(self, available: Money, requested: Money) -> None:
        super().__init__(
            f"available {available} is less than {requested}",
            "INSUFFICIENT_CREDITS",
            {"available_minor_units": str(available.minor_units)},
        )


class BalanceLimitExceeded(FailedPrecondition):
    def __init__(self) -> None:
        super().__init__(
            "the balance would exceed the largest representable amount", "BALANCE_LIMIT_EXCEEDED"
        )


class InvalidAmount(FailedPrecondition):
    def __init__(self, message: str) -> None:
        super().__init__(message, "INVALID_AMOUNT")


@dataclass
class CreditAccount:
    customer_id: str
    currency: str
    available: int = 0
    reserved: int = 0
    spent: int = 0
    topped_up: int = 0
    updated_at: datetime | None = None  # written by the store; None until stored

    def _check_currency(self, amount: Money) -> None:
        if amount.currency != self.currency:
            raise CurrencyMismatch(self.currency, amount.currency)

    def _check_positive(self, amount: Money) -> None:
        if not amount.is_positive:
            raise InvalidAmount(f"amount must be positive, got {amount}")

    def top_up(self, amount: Money) -> None:
        self._check_currency(amount)
        self._check_positive(amount)
        if self.topped_up + amount.minor_units > MAX_MINOR_UNITS:
            raise BalanceLimitExceeded()
        self.available += amount.minor_units
        self.topped_up += amount.minor_units

    def reserve(self, amount: Money) -> None:
        """Place a hold: available → reserved."""
        self._check_currency(amount)
        self._check_positive(amount)
        if amount.minor_units > self.available:
            raise InsufficientCredits(Money(self.currency, self.available), amount)
        self.available -= amount.minor_units
        self.reserved += amount.minor_units

    def release(self, amount: Money) -> None:
        """Drop a hold: reserved → available."""
        self._check_currency(amount)
        self._check_positive(amount)
        if amount.minor_units > self.reserved:
            raise InvalidAmount(f"cannot release {amount}: only {self.reserved} reserved")
        self.reserved -= amount.minor_units
        self.available += amount.minor_units

    def capture(self, amount: Money) -> None:
        """Settle a hold: reserved → spent."""
        self._check_currency(amount)
        self._check_positive(amount)
        if amount.minor_units > self.reserved:
            raise InvalidAmount(f"cannot capture {amount}: only {self.reserved} reserved")
        self.reserved -= amount.minor_units
        self.spent += amount.minor_units

    def refund(self, amount: Money) -> None:
        """Give spent credits back: spent → available."""
        self._check_currency(amount)
        self._check_positive(amount)
        if amount.minor_units > self.spent:
            raise InvalidAmount(f"cannot refund {amount}: only {self.spent} spent")
        self.spent -= amount.minor_units
        self.available += amount.minor_units

    @property
    def is_balanced(self) -> bool:
        parts = (self.available, self.reserved, self.spent)
        return all(p >= 0 for p in parts) and sum(parts) == self.topped_up
