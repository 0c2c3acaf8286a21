"""Credit's saga handlers against real PostgreSQL: refunds give back only what the refunded
payment captured, once per refund; every handler locks the account before the hold."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.events import new_event
from services.common.inbox import PoisonEvent
from services.common.money import Money
from services.common.sql import Sql
from services.credit.adapters.repository import AccountRepository
from services.credit.adapters.unit_of_work import SqlCreditUnitOfWork
from services.credit.service_layer import saga
from shop.common.v1 import money_pb2
from shop.order.v1 import events_pb2 as order_events
from shop.payment.v1 import events_pb2 as payment_events
from tests.ids import new_id

pytestmark = pytest.mark.integration

TTL = 900


def usd(minor_units: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="USD", minor_units=minor_units)


class Books:
    """One customer's wallet, driven through Credit's saga handlers."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.customer = new_id()

    def uow(self) -> SqlCreditUnitOfWork:
        return SqlCreditUnitOfWork(self.engine, "/shop/credit")

    async def top_up(self, minor_units: int) -> None:
        async with self.uow() as uow:
            accounts = AccountRepository(uow.conn)
            account = await accounts.get_or_open(self.customer, "USD")
            account.top_up(Money("USD", minor_units))
            await accounts.save(account)

    async def order(self, minor_units: int) -> str:
        order_id = new_id()
        event = new_event(
            order_events.OrderCreated,
            order_id=order_id,
            customer_id=self.customer,
            total=usd(minor_units),
        )
        async with self.uow() as uow:
            await saga.reserve_for_order(uow, event, TTL)
        return order_id

    async def cancel(self, order_id: str) -> None:
        event = new_event(order_events.OrderCancelled, order_id=order_id, customer_id=self.customer)
        async with self.uow() as uow:
            await saga.release_for_cancelled_order(uow, event)

    async def paid(self, order_id: str, minor_units: int, payment_id: str | None = None) -> str:
        payment_id = payment_id or new_id()
        event = new_event(
            payment_events.PaymentSucceeded,
            payment_id=payment_id,
            order_id=order_id,
            customer_id=self.customer,
            amount=usd(minor_units),
        )
        async with self.uow() as uow:
            await saga.capture_for_payment(uow, event)
        return payment_id

    async def refunded(
        self, order_id: str, payment_id: str, minor_units: int, refund_id: str | None = None
    ) -> str:
        refund_id = refund_id or new_id()
        event = new_event(
            payment_events.PaymentRefunded,
            refund_id=refund_id,
            payment_id=payment_id,
            order_id=order_id,
            customer_id=self.customer,
            amount=usd(minor_units),
        )
        async with self.uow() as uow:
            await saga.refund(uow, event)
        return refund_id

    async def balance(self) -> tuple[int, int, int, int]:
        """(available, reserved, spent, topped_up)"""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT available, reserved, spent, topped_up FROM accounts"
                        " WHERE customer_id = :id"
                    ),
                    {"id": self.customer},
                )
            ).one()
        return (row.available, row.reserved, row.spent, row.topped_up)

    async def noted(self) -> list[tuple[str, int]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(text("SELECT kind, amount FROM reconciliation ORDER BY id"))
            return [(row.kind, row.amount) for row in rows]


def reported(kind: str) -> float:
    """credit_reconciliation_total{kind} as Prometheus would scrape it."""
    return REGISTRY.get_sample_value("credit_reconciliation_total", {"kind": kind}) or 0.0


@pytest.fixture
def books(credit_engine: AsyncEngine) -> Books:
    return Books(credit_engine)


async def test_a_late_capture_short_of_credits_is_refunded_with_nothing(books: Books) -> None:
    """Order A's payment wins at the gateway after A was cancelled and order B has held and
    spent the released credits: nothing can be captured for A, so its compensating refund
    must give nothing back (it used to give back the credits B spent)."""
    reported_before = {
        kind: reported(kind) for kind in ("LATE_CAPTURE_SHORT", "REFUND_NOT_CAPTURED")
    }
    await books.top_up(10_000)
    first = await books.order(10_000)
    await books.cancel(first)  # released: 10 000 available again
    second = await books.order(10_000)
    await books.paid(second, 10_000)  # B holds and spends them
    late = await books.paid(first, 10_000)  # A's payment, late: credits are short
    assert await books.balance() == (0, 0, 10_000, 10_000)

    await books.refunded(first, late, 10_000)  # Payment's automatic refund of A

    assert await books.balance() == (0, 0, 10_000, 10_000)  # nothing created
    assert await books.noted() == [("LATE_CAPTURE_SHORT", 10_000), ("REFUND_NOT_CAPTURED", 10_000)]
    assert reported("LATE_CAPTURE_SHORT") == reported_before["LATE_CAPTURE_SHORT"] + 1
    assert reported("REFUND_NOT_CAPTURED") == reported_before["REFUND_NOT_CAPTURED"] + 1


async def test_the_same_refund_under_a_new_event_id_gives_back_once(books: Books) -> None:
    await books.top_up(5_000)
    order = await books.order(5_000)
    payment = await books.paid(order, 5_000)
    refund = await books.refunded(order, payment, 2_000)
    await books.refunded(order, payment, 2_000, refund_id=refund)  # republished
    assert await books.balance() == (2_000, 0, 3_000, 5_000)


async def test_refunds_never_give_back_more_than_the_payment_captured(books: Books) -> None:
    await books.top_up(20_000)
    spent_elsewhere = await books.order(10_000)
    await books.paid(spent_elsewhere, 10_000)
    order = await books.order(4_000)
    payment = await books.paid(order, 4_000)
    await books.refunded(order, payment, 3_000)
    await books.refunded(order, payment, 3_000)  # a second refund: only 1 000 is left
    assert await books.balance() == (10_000, 0, 10_000, 20_000)
    assert await books.noted() == [("REFUND_OVER_CAPTURE", 3_000)]


async def test_a_refund_of_a_payment_that_captured_nothing_here_gives_nothing(
    books: Books,
) -> None:
    await books.top_up(6_000)
    order = await books.order(6_000)
    await books.paid(order, 6_000)
    await books.refunded(order, new_id(), 6_000)  # another payment of the same order
    await books.refunded(new_id(), new_id(), 6_000)  # an order Credit never held
    assert await books.balance() == (0, 0, 6_000, 6_000)
    assert [kind for kind, _ in await books.noted()] == ["REFUND_NOT_CAPTURED"] * 2


async def test_a_refund_ahead_of_its_capture_waits_for_it(books: Books) -> None:
    await books.top_up(3_000)
    order = await books.order(3_000)
    payment = new_id()
    with pytest.raises(saga.CaptureNotYetApplied):
        await books.refunded(order, payment, 3_000)
    await books.paid(order, 3_000, payment)
    await books.refunded(order, payment, 3_000)
    assert await books.balance() == (3_000, 0, 0, 3_000)


async def test_an_event_naming_another_customers_hold_is_poison(books: Books) -> None:
    await books.top_up(1_000)
    order = await books.order(1_000)
    books.customer, owner = new_id(), books.customer
    await books.top_up(1_000)  # the other customer has an account too
    with pytest.raises(PoisonEvent):
        await books.cancel(order)
    books.customer = owner
    assert await books.balance() == (0, 1_000, 0, 1_000)  # the hold stands


@pytest.fixture
def locks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tables whose rows each statement locks (FOR UPDATE), in the order taken."""
    taken: list[str] = []
    bind = Sql._bind

    def recording(sql: str, params: Any) -> Any:
        if "FOR UPDATE" in sql:
            match = re.search(r"\bFROM\s+(\w+)", sql)
            taken.append(match.group(1) if match else sql)
        return bind(sql, params)

    monkeypatch.setattr(Sql, "_bind", staticmethod(recording))
    return taken


async def test_every_handler_locks_the_account_before_the_hold(
    books: Books, locks: list[str]
) -> None:
    """Batches lock accounts in customer order; a handler that took the hold first could
    deadlock with a batch holding its account and waiting for that hold."""
    await books.top_up(9_000)
    steps = []
    cancelled = await books.order(1_000)
    locks.clear()
    await books.cancel(cancelled)
    steps.append(("cancel", list(locks)))
    order = await books.order(2_000)
    locks.clear()
    payment = await books.paid(order, 2_000)
    steps.append(("capture", list(locks)))
    locks.clear()
    await books.refunded(order, payment, 500)
    steps.append(("refund", list(locks)))
    failed = await books.order(1_000)
    locks.clear()
    event = new_event(
        payment_events.PaymentFailed,
        payment_id=new_id(),
        order_id=failed,
        customer_id=books.customer,
        amount=usd(1_000),
    )
    async with books.uow() as uow:
        await saga.release_for_failed_payment(uow, event)
    steps.append(("failed payment", list(locks)))
    for name, taken in steps:
        assert taken[:2] == ["accounts", "reservations"], (name, taken)
