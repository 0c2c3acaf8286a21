"""What the servicers read from a request once its buf.validate rules have passed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from buf.validate import validate_pb2

from services.common.errors import FieldViolation, InvalidArgument
from services.common.money import CURRENCY_EXPONENTS, Money
from services.common.request_rules import violations_of
from services.common.validation import MAX_REASON_LENGTH, canonical_id, money, page_size, refuse
from services.order.domain.model import MAX_ITEMS, MAX_SKU_LENGTH
from shop.common.v1.money_pb2 import Money as MoneyProto
from shop.order.v1.order_pb2 import OrderItem
from shop.order.v1.order_service_pb2 import CancelOrderRequest, CreateOrderRequest, GetOrderRequest
from shop.payment.v1.payment_service_pb2 import RefundPaymentRequest


@dataclass
class FakeMoney:
    currency_code: str
    minor_units: int


def test_an_upper_case_uuid_is_stored_in_its_one_canonical_spelling() -> None:
    assert canonical_id("A8098C1A-F86E-11DA-BD1A-00112444BE1E") == (
        "a8098c1a-f86e-11da-bd1a-00112444be1e"
    )


def test_empty_currency_means_usd() -> None:
    assert money(FakeMoney("", 15000)) == Money("USD", 15000)
    assert money(FakeMoney("EUR", 1)) == Money("EUR", 1)


@pytest.mark.parametrize(("size", "expected"), [(0, 50), (10, 10), (5000, 1000)])
def test_page_size_defaults_and_caps(size: int, expected: int) -> None:
    assert page_size(size) == expected


def test_refuse_names_every_field_once_in_the_message() -> None:
    refuse([])  # nothing to refuse
    violations = [
        FieldViolation("items[1].unit_price.currency_code", "one currency"),
        FieldViolation("items[1].unit_price.currency_code", "again"),
        FieldViolation("items", "total"),
    ]
    with pytest.raises(InvalidArgument) as raised:
        refuse(violations)
    assert raised.value.violations == tuple(violations)
    assert raised.value.message.endswith(": items[1].unit_price.currency_code, items")


@pytest.mark.parametrize(
    "value",
    [
        "x",
        "a8098c1a-f86e-11da-bd1a",
        "{a8098c1a-f86e-11da-bd1a-00112444be1e}",
        "urn:uuid:a8098c1a-f86e-11da-bd1a-00112444be1e",
        "a8098c1af86e11dabd1a00112444be1e",
    ],
)
def test_the_rules_accept_a_uuid_only_in_its_dashed_form(value: str) -> None:
    assert [v.field for v in violations_of(GetOrderRequest(order_id=value))] == ["order_id"]
    canonical = GetOrderRequest(order_id="A8098C1A-F86E-11DA-BD1A-00112444BE1E")
    assert violations_of(canonical) == []


def _field_rules(message: Any, field: str) -> validate_pb2.FieldRules:
    rules: validate_pb2.FieldRules = (
        message.DESCRIPTOR.fields_by_name[field].GetOptions().Extensions[validate_pb2.field]
    )
    return rules


def test_the_contracts_limits_are_the_domains() -> None:
    """The rules in proto/ and the domain's constants say the same thing."""
    assert _field_rules(OrderItem, "sku").string.max_len == MAX_SKU_LENGTH
    assert _field_rules(CancelOrderRequest, "reason").string.max_len == MAX_REASON_LENGTH
    assert _field_rules(RefundPaymentRequest, "reason").string.max_len == MAX_REASON_LENGTH
    assert _field_rules(CreateOrderRequest, "items").repeated.max_items == MAX_ITEMS
    currency = _field_rules(MoneyProto, "currency_code").cel[0].expression
    listed = set(re.findall(r"'([A-Z]{3})'", currency))
    assert listed == set(CURRENCY_EXPONENTS)
