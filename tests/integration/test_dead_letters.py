"""Dead letters (services/common/inbox.py): an event that fails a few times and then
succeeds is applied once; one that always fails is moved to DEADLETTER after exactly
`max_deliver` deliveries with its headers, and the events behind it are applied; garbage and
a mismatched `ce-type` go there at once; a process killed between the dead letter's publish
and the ack leaves one dead letter; a replay after the fix applies the event once, and a
second replay changes nothing. Real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import create_engine
from services.common.events import DEADLETTER, envelope, new_event
from services.common.inbox import Consumer, EventHandler
from services.common.jetstream import Messaging
from services.common.migrator import core_migrations, migrate
from services.common.uow import UnitOfWork
from services.shopctl.streams import DeadLetter, dead_letters, replay
from shop.common.v1 import money_pb2
from shop.payment.v1 import events_pb2 as payment_events
from tests.conftest import Infra
from tests.ids import new_id
from tests.integration.conftest import TEST_TABLES
from tests.integration.deadletter_worker import COUNT, counting_handler

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MAX_DELIVER = 3


def failed_event(**changes: Any) -> Any:
    fields: dict[str, Any] = {
        "payment_id": new_id(),
        "order_id": new_id(),
        "customer_id": new_id(),
        "reservation_id": new_id(),
        "amount": money_pb2.Money(currency_code="USD", minor_units=1500),
    }
    return new_event(payment_events.PaymentFailed, **{**fields, **changes})


def refund_requested() -> Any:
    return new_event(
        payment_events.RefundRequested,
        refund_id=new_id(),
        payment_id=new_id(),
        order_id=new_id(),
        customer_id=new_id(),
        amount=money_pb2.Money(currency_code="USD", minor_units=700),
    )


@contextlib.asynccontextmanager
async def messaging_for(infra: Infra) -> AsyncIterator[Messaging]:
    messaging = Messaging(infra.nats_url, "deadletter-test")
    connect = asyncio.create_task(messaging.connect())
    await asyncio.wait_for(messaging.ready.wait(), 20)
    try:
        yield messaging
    finally:
        connect.cancel()
        await messaging.close()


@contextlib.asynccontextmanager
async def running(
    engine: AsyncEngine,
    messaging: Messaging,
    handlers: dict[type[Message], EventHandler],
    name: str | None = None,
) -> AsyncIterator[Consumer]:
    consumer = Consumer(
        name=name or f"dead-{uuid.uuid4().hex[:8]}",
        stream="PAYMENTS",
        handlers=handlers,
        unit_of_work=lambda: UnitOfWork(engine, "/test"),
        messaging=messaging,
        fetch_timeout=0.2,
        max_deliver=MAX_DELIVER,
        retry_seconds=0.05,
    )
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def publish(messaging: Messaging, event: Any, **header_changes: str) -> None:
    env = envelope(event, "/shop/payment")
    await messaging.js.publish(env.subject, env.payload, headers={**env.headers, **header_changes})


async def letters_of(messaging: Messaging, consumer: str, event_id: str) -> list[DeadLetter]:
    return [d for d in await dead_letters(messaging.js, consumer) if d.headers["ce-id"] == event_id]


async def eventually(condition: Any, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_an_event_that_fails_then_succeeds_is_applied_once_and_never_dead_lettered(
    engine: AsyncEngine, infra: Infra
) -> None:
    event = failed_event()
    tries: list[int] = []

    async def flaky(uow: UnitOfWork, seen: Any) -> None:
        if seen.event_id != event.event_id:
            return
        tries.append(1)
        if len(tries) < MAX_DELIVER:
            raise RuntimeError("the moment is bad")
        await uow.conn.execute(COUNT, {"name": seen.event_id})

    async with messaging_for(infra) as messaging:
        async with running(engine, messaging, {payment_events.PaymentFailed: flaky}) as consumer:
            await publish(messaging, event)

            async def counted() -> bool:
                async with engine.connect() as conn:
                    value = await conn.scalar(
                        text("SELECT value FROM counters WHERE name = :n"), {"n": event.event_id}
                    )
                return bool(value == 1)

            await eventually(counted)
            await asyncio.sleep(0.5)  # room for a wrongful second application
        assert len(tries) == MAX_DELIVER
        assert await counted()
        assert await letters_of(messaging, consumer.name, event.event_id) == []


async def test_an_event_that_always_fails_is_dead_lettered_after_max_deliver_and_blocks_nothing(
    engine: AsyncEngine, infra: Infra
) -> None:
    bad, good = failed_event(), failed_event()
    tries: list[str] = []
    applied: list[str] = []

    async def handler(uow: UnitOfWork, seen: Any) -> None:
        if seen.event_id == bad.event_id:
            tries.append(seen.event_id)
            raise RuntimeError("a bug in the handler")
        applied.append(seen.event_id)

    async with messaging_for(infra) as messaging:
        async with running(engine, messaging, {payment_events.PaymentFailed: handler}) as consumer:
            await publish(messaging, bad)
            await publish(messaging, good)

            async def dead() -> bool:
                return bool(await letters_of(messaging, consumer.name, bad.event_id))

            await eventually(dead)

            async def good_applied() -> bool:
                return good.event_id in applied

            await eventually(good_applied)
            await asyncio.sleep(0.5)  # no delivery after the dead letter
        # One try per delivery, and one more if a delivery came in a batch with the good
        # event (the batch is tried together once, then each event alone).
        assert MAX_DELIVER <= len(tries) <= MAX_DELIVER + 1
        [letter] = await letters_of(messaging, consumer.name, bad.event_id)
        sent = envelope(bad, "/shop/payment")
        assert letter.subject == f"deadletter.{consumer.name}.payments.failed"
        assert letter.data == sent.payload
        for name, value in sent.headers.items():
            if name != "Nats-Msg-Id":
                assert letter.headers[name] == value, name
        assert letter.headers["shop-dead-msg-id"] == bad.event_id
        assert letter.headers["shop-dead-deliveries"] == str(MAX_DELIVER)
        assert "RuntimeError: a bug in the handler" in letter.headers["shop-dead-reason"]
        assert letter.headers["shop-dead-at"].endswith("Z")
        assert letter.headers["shop-dead-consumer"] == consumer.name
        assert letter.headers["shop-dead-stream"] == "PAYMENTS"


@pytest.mark.parametrize("poison", ["garbage body", "mismatched ce-type"])
async def test_garbage_and_a_mismatched_type_are_dead_lettered_at_once(
    engine: AsyncEngine, infra: Infra, poison: str
) -> None:
    event = failed_event()
    seen: list[str] = []

    async def record(uow: UnitOfWork, got: Any) -> None:
        seen.append(got.event_id)

    async with messaging_for(infra) as messaging:
        async with running(engine, messaging, {payment_events.PaymentFailed: record}) as consumer:
            env = envelope(event, "/shop/payment")
            if poison == "garbage body":
                body, headers = b"\xff\x00not protobuf", env.headers
            else:
                body = env.payload
                headers = {**env.headers, "ce-type": "shop.payment.v1.PaymentSucceeded"}
            await messaging.js.publish(env.subject, body, headers=headers)

            async def dead() -> bool:
                return bool(await letters_of(messaging, consumer.name, event.event_id))

            await eventually(dead)
        [letter] = await letters_of(messaging, consumer.name, event.event_id)
        assert letter.headers["shop-dead-deliveries"] == "1"
        assert letter.data == body
        assert event.event_id not in seen


def worker(infra: Infra, url: str, schema: str, name: str, poison: str, **env: str) -> Any:
    command = [sys.executable, "-m", "tests.integration.deadletter_worker"]
    return subprocess.Popen(
        [*command, infra.nats_url, url, schema, name, poison],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_kill_between_dead_letter_and_ack_then_replay_after_the_fix_applies_once(
    database_url: str, infra: Infra
) -> None:
    schema = f"d_{uuid.uuid4().hex[:10]}"
    engine = create_engine(database_url, schema, pool_size=3)
    await migrate(engine, schema, [*core_migrations(), TEST_TABLES])
    name = f"dead-kill-{uuid.uuid4().hex[:6]}"
    event = refund_requested()
    try:
        async with messaging_for(infra) as messaging:
            await publish(messaging, event)
            # 1. Poison; the process dies right after the dead letter's publish, before the ack.
            first = worker(
                infra, database_url, schema, name, event.refund_id,
                SHOP_FAULT_CRASH_AT="inbox.dead_lettered",
            )  # fmt: skip
            assert await asyncio.to_thread(first.wait, 60) == -signal.SIGKILL
            assert len(await letters_of(messaging, name, event.event_id)) == 1
            # 2. Restarted, still poison: the redelivery (after ack_wait) is dead-lettered
            # again, JetStream drops the copy, and the event is acked at last.
            second = worker(infra, database_url, schema, name, event.refund_id)
            try:
                sub = await messaging.js.pull_subscribe_bind(durable=name, stream="PAYMENTS")

                async def acked() -> bool:
                    info = await sub.consumer_info()
                    return info.num_ack_pending == 0 and info.num_pending == 0

                await eventually(acked, timeout=90)
            finally:
                second.send_signal(signal.SIGKILL)
                await asyncio.to_thread(second.wait, 30)
            [letter] = await letters_of(messaging, name, event.event_id)

            # 3. Fixed (nothing refused any more), and replayed: applied once; a second
            # replay changes nothing.
            async def count() -> int | None:
                async with engine.connect() as conn:
                    value = await conn.scalar(
                        text("SELECT value FROM counters WHERE name = :n"), {"n": event.refund_id}
                    )
                return None if value is None else int(value)

            assert await count() is None
            handlers: dict[type[Message], EventHandler] = {
                payment_events.RefundRequested: counting_handler("")
            }
            async with running(engine, messaging, handlers, name=name):
                # (new id: the original one is still in JetStream's duplicate window)
                first_replay = await replay(messaging.js, letter.seq, new_id=True, keep=True)
                assert not first_replay.duplicate
                await eventually(lambda: _equals(count(), 1))
                second_replay = await replay(messaging.js, letter.seq, new_id=True)
                assert not second_replay.duplicate
                await asyncio.sleep(1.5)  # room for a wrongful second application
                assert await count() == 1
            assert await letters_of(messaging, name, event.event_id) == []
            assert (await messaging.js.stream_info(DEADLETTER)).config.subjects == ["deadletter.>"]
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()


async def _equals(value: Any, expected: object) -> bool:
    return bool(await value == expected)
