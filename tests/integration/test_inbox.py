"""Idempotent consumers: a redelivered or duplicated event is applied once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from google.protobuf.message import Message
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.events import envelope, new_event
from services.common.inbox import Consumer, EventHandler
from services.common.jetstream import Messaging
from services.common.uow import UnitOfWork
from shop.order.v1 import events_pb2
from tests.conftest import Infra

pytestmark = pytest.mark.integration

CUSTOMER = str(uuid.uuid4())


async def counter(engine: AsyncEngine, name: str) -> int:
    async with engine.connect() as conn:
        value = (
            await conn.execute(text("SELECT value FROM counters WHERE name = :n"), {"n": name})
        ).scalar()
        return int(value or 0)


@contextlib.asynccontextmanager
async def consuming(
    engine: AsyncEngine, infra: Infra, stream: str, handlers: dict[type[Message], EventHandler]
) -> AsyncIterator[None]:
    """A fresh durable consumer on `stream` running `handlers`, for the block's duration
    (a fresh consumer starts at the stream's beginning: earlier tests' events come too)."""
    messaging = Messaging(infra.nats_url, "inbox-test")
    connect = asyncio.create_task(messaging.connect())
    await asyncio.wait_for(messaging.ready.wait(), 20)
    consumer = Consumer(
        name=f"test-{uuid.uuid4().hex[:8]}",
        stream=stream,
        handlers=handlers,
        unit_of_work=lambda: UnitOfWork(engine, "/test"),
        messaging=messaging,
        fetch_timeout=0.2,
    )
    running = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        running.cancel()
        connect.cancel()
        await messaging.close()


def running_consumer(
    engine: AsyncEngine, infra: Infra, handler: EventHandler
) -> contextlib.AbstractAsyncContextManager[None]:
    """A fresh durable consumer of OrderCancelled on the ORDERS stream, running `handler`."""
    return consuming(engine, infra, "ORDERS", {events_pb2.OrderCancelled: handler})


async def _publish_cancellations(infra: Infra, order_ids: list[str]) -> list[str]:
    """Publish one OrderCancelled per order id before any consumer runs, so that the
    consumer's first fetch gets them all as one batch; returns the event ids."""
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    event_ids = []
    for order_id in order_ids:
        event = new_event(
            events_pb2.OrderCancelled, order_id=order_id, customer_id=CUSTOMER, reason="test"
        )
        env = envelope(event, "/shop/order")
        await js.publish(env.subject, env.payload, headers=env.headers)
        event_ids.append(event.event_id)
    await nc.close()
    return event_ids


async def _bump(uow: UnitOfWork, event: Any) -> None:
    await uow.conn.execute(
        (
            "INSERT INTO counters (name, value) VALUES (:n, 1)"
            " ON CONFLICT (name) DO UPDATE SET value = counters.value + 1"
        ),
        {"n": event.order_id},
    )


async def _wait_until_counted(engine: AsyncEngine, names: list[str], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if all([await counter(engine, name) >= 1 for name in names]):
            return
        await asyncio.sleep(0.1)


async def test_a_redelivered_or_duplicated_event_is_applied_once(
    engine: AsyncEngine, infra: Infra
) -> None:
    order_id = str(uuid.uuid4())
    failures_left = 1  # the first delivery fails after its effect: it must roll back

    async def bump(uow: UnitOfWork, event: Any) -> None:
        nonlocal failures_left
        await _bump(uow, event)
        if failures_left:
            failures_left -= 1
            raise RuntimeError("crash after the effect, before the commit")

    async with running_consumer(engine, infra, bump):
        event = new_event(
            events_pb2.OrderCancelled, order_id=order_id, customer_id=CUSTOMER, reason="test"
        )
        env = envelope(event, "/shop/order")
        nc = await nats.connect(infra.nats_url)
        js = nc.jetstream()
        await js.publish(env.subject, env.payload, headers=env.headers)
        # The same event again under another message id: JetStream's dedup cannot catch it.
        await js.publish(
            env.subject, env.payload, headers={**env.headers, "Nats-Msg-Id": str(uuid.uuid4())}
        )
        await nc.close()
        await _wait_until_counted(engine, [order_id], 15)
        await asyncio.sleep(1.0)  # room for any wrongful second application

    assert failures_left == 0, "the failing first delivery did happen"
    assert await counter(engine, order_id) == 1
    async with engine.connect() as conn:
        applied = (
            await conn.execute(
                text("SELECT count(*) FROM inbox WHERE event_id = :id"), {"id": event.event_id}
            )
        ).scalar_one()
    assert applied == 1


async def test_garbage_on_a_subject_is_terminated_not_retried(
    engine: AsyncEngine, infra: Infra
) -> None:
    seen: list[str] = []

    async def record(uow: UnitOfWork, event: Any) -> None:
        seen.append(event.order_id)

    async with running_consumer(engine, infra, record):
        nc = await nats.connect(infra.nats_url)
        js = nc.jetstream()
        await js.publish("orders.cancelled", b"\xff\x00 not protobuf")
        good = new_event(
            events_pb2.OrderCancelled, order_id=str(uuid.uuid4()), customer_id=CUSTOMER
        )
        env = envelope(good, "/shop/order")
        await js.publish(env.subject, env.payload, headers=env.headers)
        await nc.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while good.order_id not in seen and loop.time() < deadline:
            await asyncio.sleep(0.1)
    assert good.order_id in seen  # the consumer went past the garbage


async def test_a_fetched_batch_is_applied_in_one_transaction(
    engine: AsyncEngine, infra: Infra
) -> None:
    order_ids = [str(uuid.uuid4()) for _ in range(5)]
    event_ids = await _publish_cancellations(infra, order_ids)
    async with running_consumer(engine, infra, _bump):
        await _wait_until_counted(engine, order_ids, 15)

    assert [await counter(engine, order_id) for order_id in order_ids] == [1] * 5
    async with engine.connect() as conn:
        # processed_at is now(), the start of the transaction that applied the event
        starts = (
            await conn.execute(
                text("SELECT count(DISTINCT processed_at) FROM inbox WHERE event_id = ANY(:ids)"),
                {"ids": event_ids},
            )
        ).scalar_one()
    assert starts == 1, "the five events were applied by one transaction"


async def test_a_failing_event_in_a_batch_holds_back_only_itself(
    engine: AsyncEngine, infra: Infra
) -> None:
    order_ids = [str(uuid.uuid4()) for _ in range(5)]
    bad = order_ids[2]
    bad_fails = True

    async def bump_unless_bad(uow: UnitOfWork, event: Any) -> None:
        await _bump(uow, event)
        if event.order_id == bad and bad_fails:
            raise RuntimeError("this event cannot be applied yet")

    await _publish_cancellations(infra, order_ids)
    good = [order_id for order_id in order_ids if order_id != bad]
    async with running_consumer(engine, infra, bump_unless_bad):
        await _wait_until_counted(engine, good, 15)
        counted_while_failing = {
            order_id: await counter(engine, order_id) for order_id in order_ids
        }
        bad_fails = False  # the cause goes away: the redelivery (after the nak's delay) applies it
        await _wait_until_counted(engine, [bad], 15)

    assert counted_while_failing == {order_id: int(order_id != bad) for order_id in order_ids}
    assert [await counter(engine, order_id) for order_id in order_ids] == [1] * 5


class _Delivered:
    """What a consumer reads of a fetched JetStream message, for driving `handle_batch`
    directly: the batch, not NATS, is under test here."""

    def __init__(self, event: Any) -> None:
        env = envelope(event, "/shop/order")
        self.subject, self.data, self.headers = env.subject, env.payload, env.headers
        self.acked = False

    async def ack(self) -> None:
        self.acked = True

    async def nak(self, delay: float | None = None) -> None:
        raise AssertionError("nothing here should be left for redelivery")

    async def term(self) -> None:
        raise AssertionError("every event here is decodable")


async def test_two_consumers_batches_lock_in_one_order_and_never_deadlock(
    engine: AsyncEngine, infra: Infra, caplog: pytest.LogCaptureFixture
) -> None:
    """Two consumers each fetch a batch touching the same two rows, in opposite orders.
    Applied as fetched, each would lock one row and wait for the other: a deadlock, which
    PostgreSQL breaks only after deadlock_timeout (1 s) by failing one batch. Applied in
    `lock_order`, both take the first row first and the second batch simply waits."""
    first, second = sorted(str(uuid.uuid4()) for _ in range(2))
    async with engine.begin() as conn:
        for name in (first, second):
            await conn.execute(
                text("INSERT INTO counters (name, value) VALUES (:n, 0)"), {"n": name}
            )

    async def lock_and_linger(uow: UnitOfWork, event: Any) -> None:
        await _bump(uow, event)  # holds the counter's row lock until the batch commits
        await asyncio.sleep(0.2)  # long enough for the other batch to take its first lock

    def consumer(name: str) -> Consumer:
        return Consumer(
            name=f"{name}-{uuid.uuid4().hex[:8]}",
            stream="ORDERS",
            handlers={events_pb2.OrderCancelled: lock_and_linger},
            unit_of_work=lambda: UnitOfWork(engine, "/test"),
            messaging=Messaging(infra.nats_url, "unused"),
            lock_order=lambda event: event.order_id,
        )

    def batch(*order_ids: str) -> list[_Delivered]:
        return [
            _Delivered(
                new_event(
                    events_pb2.OrderCancelled, order_id=o, customer_id=CUSTOMER, reason="test"
                )
            )
            for o in order_ids
        ]

    one, other = batch(second, first), batch(first, second)
    await asyncio.gather(
        consumer("a").handle_batch(one),  # type: ignore[arg-type]
        consumer("b").handle_batch(other),  # type: ignore[arg-type]
    )

    assert not [r.message for r in caplog.records if "failed" in r.getMessage()]
    assert all(m.acked for m in one + other)
    assert await counter(engine, first) == 2
    assert await counter(engine, second) == 2


async def test_a_batch_claims_its_events_at_once_and_applies_each_only_once(
    engine: AsyncEngine, infra: Infra, caplog: pytest.LogCaptureFixture
) -> None:
    """The batch claims its events together: an event applied by an earlier batch, and a
    second copy of an event within the batch, are duplicates, not applied again, and the
    batch is not thrown back to be applied event by event."""
    applied_before, twice, once = (str(uuid.uuid4()) for _ in range(3))

    def cancelled(order_id: str) -> Any:
        return new_event(
            events_pb2.OrderCancelled, order_id=order_id, customer_id=CUSTOMER, reason="test"
        )

    consumer = Consumer(
        name=f"claims-{uuid.uuid4().hex[:8]}",
        stream="ORDERS",
        handlers={events_pb2.OrderCancelled: _bump},
        unit_of_work=lambda: UnitOfWork(engine, "/test"),
        messaging=Messaging(infra.nats_url, "unused"),
    )
    earlier = cancelled(applied_before)
    first_batch = [_Delivered(earlier), _Delivered(cancelled(str(uuid.uuid4())))]
    await consumer.handle_batch(first_batch)  # type: ignore[arg-type]
    repeated = cancelled(twice)
    batch = [_Delivered(e) for e in (earlier, repeated, cancelled(once), repeated)]
    await consumer.handle_batch(batch)  # type: ignore[arg-type]

    assert not [r.message for r in caplog.records if "failed" in r.getMessage()]
    assert all(m.acked for m in batch)
    assert [await counter(engine, name) for name in (applied_before, twice, once)] == [1, 1, 1]
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT count(*) FROM inbox WHERE consumer = :c AND event_id = :id"),
                {"c": consumer.name, "id": repeated.event_id},
            )
        ).scalar_one()
    assert rows == 1
