"""Events that can never be applied are taken off the stream, not applied and not retried:
a body whose type contradicts its subject, an event with a bad field, and an event a
handler finds contradicts the books (PoisonEvent). Real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import nats
import pytest
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.events import envelope, new_event
from services.common.inbox import EventHandler, PoisonEvent
from services.common.uow import UnitOfWork
from shop.common.v1 import money_pb2
from shop.payment.v1 import events_pb2 as payment_events
from tests.conftest import Infra
from tests.ids import new_id
from tests.integration.test_inbox import consuming

pytestmark = pytest.mark.integration


def payment_event(cls: type[Any], **changes: Any) -> Any:
    fields: dict[str, Any] = {
        "payment_id": new_id(),
        "order_id": new_id(),
        "customer_id": new_id(),
        "reservation_id": new_id(),
        "amount": money_pb2.Money(currency_code="USD", minor_units=1500),
    }
    return new_event(cls, **{**fields, **changes})


def payments_consumer(
    engine: AsyncEngine, infra: Infra, handlers: dict[type[Message], EventHandler]
) -> contextlib.AbstractAsyncContextManager[None]:
    return consuming(engine, infra, "PAYMENTS", handlers)


async def publish(infra: Infra, subject: str, payload: bytes, headers: dict[str, str]) -> None:
    nc = await nats.connect(infra.nats_url)
    await nc.jetstream().publish(subject, payload, headers=headers)
    await nc.close()


async def wait_for(condition: Any, timeout: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.05)


async def test_a_success_published_on_the_failure_subject_is_applied_as_nothing(
    engine: AsyncEngine, infra: Infra
) -> None:
    applied: list[tuple[str, str]] = []

    async def succeeded(uow: UnitOfWork, event: Any) -> None:
        applied.append(("succeeded", event.order_id))

    async def failed(uow: UnitOfWork, event: Any) -> None:
        applied.append(("failed", event.order_id))

    handlers = {payment_events.PaymentSucceeded: succeeded, payment_events.PaymentFailed: failed}
    async with payments_consumer(engine, infra, handlers):  # type: ignore[arg-type]
        forged_event = payment_event(payment_events.PaymentSucceeded)
        forged = envelope(forged_event, "/forger")
        # A PaymentSucceeded body and type header, on the subject of failures.
        await publish(infra, "payments.failed", forged.payload, forged.headers)
        good = payment_event(payment_events.PaymentFailed)
        env = envelope(good, "/shop/payment")
        await publish(infra, env.subject, env.payload, env.headers)
        await wait_for(lambda: ("failed", good.order_id) in applied)
        await asyncio.sleep(0.5)  # room for a wrongful application
    mine = {good.order_id, forged_event.order_id}
    assert [(kind, order) for kind, order in applied if order in mine] == [
        ("failed", good.order_id)
    ]


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("order_id", "not-a-uuid"),
        ("customer_id", ""),
        ("payment_id", "{" + str(uuid.uuid4()) + "}"),
        ("amount", money_pb2.Money(currency_code="XXQ", minor_units=100)),
        ("amount", money_pb2.Money(currency_code="USD", minor_units=-5)),
    ],
)
async def test_an_event_with_a_bad_field_never_reaches_its_handler(
    engine: AsyncEngine, infra: Infra, field: str, bad: Any
) -> None:
    seen: list[str] = []

    async def record(uow: UnitOfWork, event: Any) -> None:
        seen.append(event.event_id)

    async with payments_consumer(engine, infra, {payment_events.PaymentFailed: record}):
        poisoned = payment_event(payment_events.PaymentFailed, **{field: bad})
        env = envelope(poisoned, "/shop/payment")
        await publish(infra, env.subject, env.payload, env.headers)
        good = payment_event(payment_events.PaymentFailed)
        env = envelope(good, "/shop/payment")
        await publish(infra, env.subject, env.payload, env.headers)
        await wait_for(lambda: good.event_id in seen)
    # (The stream is shared: a new consumer also sees earlier tests' events.)
    assert [e for e in seen if e in (poisoned.event_id, good.event_id)] == [good.event_id]


async def test_a_poison_event_is_tried_once_and_holds_back_nothing(
    engine: AsyncEngine, infra: Infra
) -> None:
    tries: dict[str, int] = {}
    poisoned_order, good_order = new_id(), new_id()

    async def refuse(uow: UnitOfWork, event: Any) -> None:
        if event.order_id not in (poisoned_order, good_order):
            return  # earlier tests' events on the shared stream
        tries[event.order_id] = tries.get(event.order_id, 0) + 1
        if event.order_id == poisoned_order:
            raise PoisonEvent("names an account that does not exist")

    async with payments_consumer(engine, infra, {payment_events.PaymentFailed: refuse}):
        for order_id in (poisoned_order, good_order):
            env = envelope(payment_event(payment_events.PaymentFailed, order_id=order_id), "/t")
            await publish(infra, env.subject, env.payload, env.headers)
        await wait_for(lambda: len(tries) == 2)
        await asyncio.sleep(3.0)  # a nak would have redelivered it after 2 s
    # Once in the batch (rolled back), once alone: then it is off the stream for good.
    assert tries[good_order] >= 1  # (twice if it shared the poisoned batch)
    assert 1 <= tries[poisoned_order] <= 2
