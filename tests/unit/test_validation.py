from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.common.errors import InvalidArgument
from services.common.money import Money
from services.common.validation import Validator


@dataclass
class FakeMoney:
    currency_code: str
    minor_units: int


def violations(v: Validator) -> dict[str, str]:
    return {x.field: x.description for x in v.violations}


def test_every_bad_field_is_reported_at_once() -> None:
    v = Validator()
    v.uuid("customer_id", "not-a-uuid")
    v.money("amount", FakeMoney("ZZZ", 0))
    v.uuid("request_id", "")
    with pytest.raises(InvalidArgument) as raised:
        v.check()
    fields = {x.field for x in raised.value.violations}
    assert fields == {"customer_id", "amount.currency_code", "amount.minor_units", "request_id"}


@pytest.mark.parametrize(
    "value",
    [
        "x",
        "a8098c1a-f86e-11da-bd1a",
        "{a8098c1a-f86e-11da-bd1a-00112444be1e}",
        "a8098c1af86e11dabd1a00112444be1e",
    ],
)
def test_uuid_must_be_canonical(value: str) -> None:
    v = Validator()
    assert v.uuid("id", value) is None
    assert "id" in violations(v)


def test_uuid_accepts_canonical_and_upper_case() -> None:
    v = Validator()
    assert v.uuid("id", "A8098C1A-F86E-11DA-BD1A-00112444BE1E") is not None
    assert v.violations == []


def test_empty_currency_means_usd() -> None:
    v = Validator()
    assert v.money("amount", FakeMoney("", 15000)) == Money("USD", 15000)


def test_missing_amount_is_named() -> None:
    v = Validator()
    assert v.money("amount", None) is None
    assert violations(v) == {"amount": "is required"}


@pytest.mark.parametrize(("size", "expected"), [(0, 50), (10, 10), (5000, 1000)])
def test_page_size_defaults_and_caps(size: int, expected: int) -> None:
    assert Validator().page_size("page_size", size) == expected


def test_negative_page_size_is_invalid() -> None:
    v = Validator()
    v.page_size("page_size", -1)
    assert "page_size" in violations(v)
