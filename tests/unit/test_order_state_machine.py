"""The order lifecycle: every (state, trigger) pair, the cancel rules, and the exact total."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable

import pytest

from services.common.errors import InvalidArgument
from services.common.money import MAX_MINOR_UNITS, Money
from services.order.domain.model import (
    DEFAULT_CANCEL_REASON,
    EXPIRED_REASON,
    TERMINAL,
    TRANSITIONS,
    LineItem,
    Order,
    OrderAlreadyPaid,
    OrderNotCancellable,
    OrderStatus,
    Trigger,
    item_violations,
    total_minor_units,
)

S = OrderStatus
RESERVATION = "0b7c1a52-4c1e-4c58-9a57-7f0f6c1a9f01"
PAYMENT = "5d3f7f0e-2f7b-4b7e-8f55-8c2e3e7b6a02"

LEGAL = {
    (S.PENDING, Trigger.CREDITS_RESERVED): S.RESERVED,
    (S.PENDING, Trigger.RESERVATION_FAILED): S.REJECTED,
    (S.PENDING, Trigger.CANCEL): S.CANCELLED,
    (S.RESERVED, Trigger.CANCEL): S.CANCELLED,
    (S.RESERVED, Trigger.RESERVATION_EXPIRED): S.CANCELLED,
    (S.RESERVED, Trigger.PAYMENT_SUCCEEDED): S.PAID,
    (S.RESERVED, Trigger.PAYMENT_FAILED): S.PAYMENT_FAILED,
    (S.PAID, Trigger.FULLY_REFUNDED): S.REFUNDED,
}
ALL_PAIRS = list(itertools.product(OrderStatus, Trigger))
EVENT_TRIGGERS = [t for t in Trigger if t is not Trigger.CANCEL]


def usd(minor: int) -> Money:
    return Money("USD", minor)


def order(status: OrderStatus = S.PENDING) -> Order:
    created = Order.create(str(uuid.uuid4()), str(uuid.uuid4()), [LineItem("SKU-1", 2, usd(750))])
    created.status = status
    # The ids an order in this state would already carry.
    if status not in (S.PENDING, S.REJECTED):
        created.reservation_id = RESERVATION
    if status in (S.PAID, S.REFUNDED):
        created.payment_id = PAYMENT
    return created


APPLY: dict[Trigger, Callable[[Order], bool]] = {
    Trigger.CREDITS_RESERVED: lambda o: o.credits_reserved(RESERVATION),
    Trigger.RESERVATION_FAILED: lambda o: o.reservation_failed("INSUFFICIENT_CREDITS"),
    Trigger.RESERVATION_EXPIRED: lambda o: o.reservation_expired(RESERVATION),
    Trigger.PAYMENT_SUCCEEDED: lambda o: o.payment_succeeded(PAYMENT),
    Trigger.PAYMENT_FAILED: lambda o: o.payment_failed(PAYMENT, "CARD_DECLINED"),
    Trigger.FULLY_REFUNDED: lambda o: o.fully_refunded(PAYMENT),
}


def test_the_transition_table_is_exactly_the_designed_one() -> None:
    assert TRANSITIONS == LEGAL
    assert {S.REJECTED, S.PAYMENT_FAILED, S.CANCELLED, S.REFUNDED} == TERMINAL
    # Terminal states never move, whatever arrives.
    assert not [pair for pair in TRANSITIONS if pair[0] in TERMINAL]


def test_a_new_order_is_pending_with_the_exact_total() -> None:
    created = Order.create("o", "c", [LineItem("A", 3, usd(333)), LineItem("B", 1, usd(1))])
    assert created.status is S.PENDING
    assert created.total == usd(1000)
    assert (created.reservation_id, created.payment_id, created.failure_reason) == ("", "", "")


@pytest.mark.parametrize(("status", "trigger"), [p for p in ALL_PAIRS if p[1] in APPLY])
def test_every_event_moves_only_a_legal_order(status: OrderStatus, trigger: Trigger) -> None:
    subject = order(status)
    before = (subject.status, subject.reservation_id, subject.payment_id, subject.failure_reason)
    changed = APPLY[trigger](subject)
    if (status, trigger) in LEGAL:
        assert changed
        assert subject.status is LEGAL[(status, trigger)]
    else:
        # Late or out of order: refused without a trace on the order.
        assert not changed
        after = (subject.status, subject.reservation_id, subject.payment_id, subject.failure_reason)
        assert after == before


def test_credits_reserved_records_the_hold() -> None:
    subject = order()
    assert subject.credits_reserved(RESERVATION)
    assert (subject.status, subject.reservation_id) == (S.RESERVED, RESERVATION)


def test_a_failed_reservation_rejects_with_its_reason() -> None:
    subject = order()
    assert subject.reservation_failed("ACCOUNT_NOT_FOUND")
    assert (subject.status, subject.failure_reason) == (S.REJECTED, "ACCOUNT_NOT_FOUND")


def test_an_expired_hold_cancels_the_reserved_order() -> None:
    subject = order(S.RESERVED)
    assert subject.reservation_expired(RESERVATION)
    assert (subject.status, subject.failure_reason) == (S.CANCELLED, EXPIRED_REASON)


def test_the_expiry_of_another_hold_is_ignored() -> None:
    subject = order(S.RESERVED)
    assert not subject.reservation_expired(str(uuid.uuid4()))
    assert subject.status is S.RESERVED


def test_payment_outcomes_record_the_payment() -> None:
    paid = order(S.RESERVED)
    assert paid.payment_succeeded(PAYMENT)
    assert (paid.status, paid.payment_id) == (S.PAID, PAYMENT)
    failed = order(S.RESERVED)
    assert failed.payment_failed(PAYMENT, "INSUFFICIENT_FUNDS")
    assert (failed.status, failed.failure_reason) == (S.PAYMENT_FAILED, "INSUFFICIENT_FUNDS")


def test_a_refund_of_another_payment_does_not_refund_the_order() -> None:
    subject = order(S.PAID)
    assert not subject.fully_refunded(str(uuid.uuid4()))
    assert subject.status is S.PAID


def test_a_full_refund_of_its_payment_refunds_the_order() -> None:
    subject = order(S.PAID)
    assert subject.fully_refunded(PAYMENT)
    assert subject.status is S.REFUNDED


@pytest.mark.parametrize("status", [S.PENDING, S.RESERVED])
def test_cancel_of_an_open_order_records_the_reason(status: OrderStatus) -> None:
    subject = order(status)
    assert subject.cancel("changed my mind")
    assert (subject.status, subject.failure_reason) == (S.CANCELLED, "changed my mind")


def test_cancel_without_a_reason_says_the_customer_did_it() -> None:
    subject = order()
    assert subject.cancel()
    assert subject.failure_reason == DEFAULT_CANCEL_REASON


def test_cancel_of_a_cancelled_order_changes_nothing() -> None:
    subject = order()
    subject.cancel("first")
    assert not subject.cancel("second")
    assert (subject.status, subject.failure_reason) == (S.CANCELLED, "first")


def test_cancel_of_a_paid_order_says_to_refund() -> None:
    subject = order(S.PAID)
    with pytest.raises(OrderAlreadyPaid) as raised:
        subject.cancel()
    assert raised.value.reason == "ORDER_ALREADY_PAID"
    assert "refund" in raised.value.message
    assert subject.status is S.PAID


@pytest.mark.parametrize("status", [S.REJECTED, S.PAYMENT_FAILED, S.REFUNDED])
def test_cancel_of_a_finished_order_is_refused(status: OrderStatus) -> None:
    subject = order(status)
    with pytest.raises(OrderNotCancellable) as raised:
        subject.cancel()
    assert raised.value.reason == "ORDER_NOT_CANCELLABLE"
    assert raised.value.metadata["status"] == status.value
    assert subject.status is status


@pytest.mark.parametrize(
    ("status", "trigger"), [p for p in ALL_PAIRS if p[1] is Trigger.CANCEL], ids=str
)
def test_can_agrees_with_the_table(status: OrderStatus, trigger: Trigger) -> None:
    assert order(status).can(trigger) == ((status, trigger) in LEGAL)


def test_the_total_is_exact_in_integers_at_any_size() -> None:
    # 0.1 + 0.2 style errors cannot happen: quantities and minor units are integers.
    items = [LineItem("A", 3, usd(10)), LineItem("B", 7, usd(20)), LineItem("C", 1, usd(0))]
    assert total_minor_units(items) == 170
    huge = [LineItem("A", 2**31 - 1, usd(MAX_MINOR_UNITS))]
    assert total_minor_units(huge) == (2**31 - 1) * MAX_MINOR_UNITS


def test_the_largest_int64_total_is_accepted() -> None:
    items = [LineItem("A", 1, usd(MAX_MINOR_UNITS - 1)), LineItem("B", 1, usd(1))]
    assert item_violations(items) == []
    assert Order.create("o", "c", items).total == usd(MAX_MINOR_UNITS)


@pytest.mark.parametrize(
    ("items", "fields"),
    [
        ([], {"items"}),
        ([LineItem("A", 1, usd(0))], {"items"}),
        ([LineItem("A", 1, usd(MAX_MINOR_UNITS)), LineItem("B", 1, usd(1))], {"items"}),
        ([LineItem("A", 2, usd(MAX_MINOR_UNITS // 2 + 1))], {"items"}),
        (
            [LineItem("A", 1, usd(1)), LineItem("B", 1, Money("EUR", 1))],
            {"items[1].unit_price.currency_code"},
        ),
    ],
)
def test_an_unorderable_list_of_items_is_refused(items: list[LineItem], fields: set[str]) -> None:
    assert {v.field for v in item_violations(items)} == fields
    with pytest.raises(InvalidArgument):
        Order.create("o", "c", items)
