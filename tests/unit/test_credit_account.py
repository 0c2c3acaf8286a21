from __future__ import annotations

import pytest

from services.common.errors import FailedPrecondition
from services.common.money import MAX_MINOR_UNITS, Money
from services.credit.domain.model import (
    BalanceLimitExceeded,
    CreditAccount,
    CurrencyMismatch,
    InsufficientCredits,
)

CUSTOMER = "a8098c1a-f86e-11da-bd1a-00112444be1e"


def usd(minor: int) -> Money:
    return Money("USD", minor)


def test_top_up_adds_to_available_and_to_the_total() -> None:
    account = CreditAccount(CUSTOMER, "USD")
    account.top_up(usd(15000))
    account.top_up(usd(500))
    assert (account.available, account.topped_up) == (15500, 15500)
    assert account.is_balanced


def test_top_up_in_another_currency_is_refused_and_changes_nothing() -> None:
    account = CreditAccount(CUSTOMER, "USD", available=100, topped_up=100)
    with pytest.raises(CurrencyMismatch) as raised:
        account.top_up(Money("EUR", 100))
    assert raised.value.reason == "CURRENCY_MISMATCH"
    assert (account.available, account.topped_up) == (100, 100)


@pytest.mark.parametrize("minor", [0, -1])
def test_top_up_must_be_positive(minor: int) -> None:
    account = CreditAccount(CUSTOMER, "USD")
    with pytest.raises(FailedPrecondition):
        account.top_up(usd(minor))
    assert account.topped_up == 0


def test_top_up_beyond_int64_is_refused() -> None:
    account = CreditAccount(CUSTOMER, "USD", available=MAX_MINOR_UNITS, topped_up=MAX_MINOR_UNITS)
    with pytest.raises(BalanceLimitExceeded):
        account.top_up(usd(1))


def test_hold_capture_and_refund_keep_the_total_conserved() -> None:
    account = CreditAccount(CUSTOMER, "USD")
    account.top_up(usd(10000))
    account.reserve(usd(4000))
    assert (account.available, account.reserved, account.spent) == (6000, 4000, 0)
    account.capture(usd(4000))
    assert (account.available, account.reserved, account.spent) == (6000, 0, 4000)
    account.refund(usd(1500))
    assert (account.available, account.reserved, account.spent) == (7500, 0, 2500)
    assert account.is_balanced


def test_release_returns_the_hold_to_available() -> None:
    account = CreditAccount(CUSTOMER, "USD", available=6000, reserved=4000, topped_up=10000)
    account.release(usd(4000))
    assert (account.available, account.reserved) == (10000, 0)
    assert account.is_balanced


def test_a_hold_larger_than_available_is_refused_and_changes_nothing() -> None:
    account = CreditAccount(CUSTOMER, "USD", available=100, topped_up=100)
    with pytest.raises(InsufficientCredits) as raised:
        account.reserve(usd(101))
    assert raised.value.reason == "INSUFFICIENT_CREDITS"
    assert (account.available, account.reserved) == (100, 0)


@pytest.mark.parametrize("operation", ["release", "capture", "refund"])
def test_cannot_move_more_than_is_there(operation: str) -> None:
    account = CreditAccount(CUSTOMER, "USD", available=50, reserved=30, spent=20, topped_up=100)
    with pytest.raises(FailedPrecondition):
        getattr(account, operation)(usd(31))
    assert (account.available, account.reserved, account.spent) == (50, 30, 20)
