from __future__ import annotations

import pytest

from services.common.money import MAX_MINOR_UNITS, Money, MoneyError


def test_adds_and_subtracts_exactly_in_minor_units() -> None:
    assert Money("USD", 15000) + Money("USD", 1) == Money("USD", 15001)
    assert Money("USD", 15000) - Money("USD", 15000) == Money.zero("USD")


def test_multiplies_by_integer_quantity() -> None:
    assert Money("EUR", 199) * 3 == Money("EUR", 597)


def test_refuses_mixed_currencies() -> None:
    with pytest.raises(MoneyError, match="currency mismatch"):
        Money("USD", 1) + Money("EUR", 1)
    with pytest.raises(MoneyError):
        _ = Money("USD", 1) < Money("EUR", 2)


def test_refuses_unknown_currency() -> None:
    with pytest.raises(MoneyError, match="unknown currency"):
        Money("XXX", 1)


def test_refuses_int64_overflow() -> None:
    with pytest.raises(MoneyError, match="int64"):
        Money("USD", MAX_MINOR_UNITS) + Money("USD", 1)


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money("USD", 15000), "150.00 USD"),
        (Money("USD", -5), "-0.05 USD"),
        (Money("JPY", 500), "500 JPY"),
        (Money("KWD", 1234), "1.234 KWD"),
    ],
)
def test_formats_with_the_currency_exponent(money: Money, text: str) -> None:
    assert str(money) == text
