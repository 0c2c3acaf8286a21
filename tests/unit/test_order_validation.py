"""CreateOrder request validation, as google.rpc.BadRequest names the fields: the item rules of
proto/ (buf.validate, every bad field at once) first, then the order-level rules of the domain
(one currency, a total above zero that fits) on items that pass them."""

from __future__ import annotations

import uuid

import pytest

from services.common.errors import InvalidArgument
from services.common.money import MAX_MINOR_UNITS, Money
from services.common.request_rules import violations_of
from services.order.domain.model import MAX_ITEMS, LineItem
from services.order.entrypoints.grpc_api import line_items
from shop.common.v1.money_pb2 import Money as MoneyProto
from shop.order.v1.order_pb2 import OrderItem
from shop.order.v1.order_service_pb2 import CreateOrderRequest


def item(
    sku: str = "SKU-1", quantity: int = 1, minor: int | None = 100, currency: str = "USD"
) -> OrderItem:
    if minor is None:
        return OrderItem(sku=sku, quantity=quantity)
    return OrderItem(
        sku=sku, quantity=quantity, unit_price=MoneyProto(currency_code=currency, minor_units=minor)
    )


def bad_fields(items: list[OrderItem]) -> set[str]:
    """What the server refuses: the request's rules, then (when they pass) the domain's."""
    ids = str(uuid.uuid4())
    request = CreateOrderRequest(customer_id=ids, items=items, request_id=ids)
    found = violations_of(request)
    if found:
        return {violation.field for violation in found}
    try:
        line_items(request.items)
    except InvalidArgument as refused:
        return {violation.field for violation in refused.violations}
    return set()


def test_good_items_become_line_items_with_the_default_currency() -> None:
    items = [item(quantity=2, minor=1999, currency=""), item("B", 1, 1)]
    assert bad_fields(items) == set()
    parsed = line_items(items)
    assert parsed == [LineItem("SKU-1", 2, Money("USD", 1999)), LineItem("B", 1, Money("USD", 1))]


@pytest.mark.parametrize(
    ("items", "fields"),
    [
        ([], {"items"}),
        ([item(sku="")], {"items[0].sku"}),
        ([item(sku="   ")], {"items[0].sku"}),
        ([item(sku="x" * 129)], {"items[0].sku"}),
        ([item(quantity=0)], {"items[0].quantity"}),
        ([item(quantity=-3)], {"items[0].quantity"}),
        ([item(minor=None)], {"items[0].unit_price"}),
        ([item(minor=-1)], {"items[0].unit_price"}),
        ([item(currency="ABC")], {"items[0].unit_price.currency_code"}),
        ([item(), item(currency="EUR")], {"items[1].unit_price.currency_code"}),
        # Mixed currencies (a rule of the order, not of one item) once every item is valid.
        ([item(), item(sku="", quantity=0, currency="EUR")], {"items[1].sku", "items[1].quantity"}),
        ([item(minor=0), item("B", minor=0)], {"items"}),
        ([item(minor=MAX_MINOR_UNITS), item("B", minor=1)], {"items"}),
        ([item(quantity=2**31 - 1, minor=MAX_MINOR_UNITS)], {"items"}),
        ([item()] * (MAX_ITEMS + 1), {"items"}),
        (
            [item(sku=""), item(quantity=0), item(minor=None), item(currency="XYZ")],
            {
                "items[0].sku",
                "items[1].quantity",
                "items[2].unit_price",
                "items[3].unit_price.currency_code",
            },
        ),
    ],
)
def test_bad_items_name_each_bad_field(items: list[OrderItem], fields: set[str]) -> None:
    assert bad_fields(items) == fields


def test_a_free_item_is_fine_next_to_a_paid_one() -> None:
    assert bad_fields([item(minor=0), item("B", minor=1)]) == set()


def test_the_sku_may_be_exactly_128_characters() -> None:
    assert bad_fields([item(sku="x" * 128)]) == set()


def test_a_nul_character_in_a_sku_is_a_bad_field_not_a_database_error() -> None:
    # found by the chaos suite: PostgreSQL text cannot hold NUL, so it used to be INTERNAL
    assert bad_fields([item("A\x00B")]) == {"items[0].sku"}
