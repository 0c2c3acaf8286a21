"""A consumer process for tests/integration/test_dead_letters.py, to be killed mid-way:
`python -m tests.integration.deadletter_worker NATS_URL DATABASE_URL SCHEMA CONSUMER POISON_ID`.

It consumes payments.refund_requested and counts each event in table `counters`; the event
whose refund_id is POISON_ID is refused as poison (dead-lettered). With SHOP_FAULT_CRASH_AT
set, the process dies at that point."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from services.common.db import create_engine
from services.common.inbox import Consumer, PoisonEvent
from services.common.jetstream import Messaging
from services.common.uow import UnitOfWork
from shop.payment.v1 import events_pb2 as payment_events

COUNT = (
    "INSERT INTO counters (name, value) VALUES (:name, 1)"
    " ON CONFLICT (name) DO UPDATE SET value = counters.value + 1"
)


def counting_handler(poison_id: str) -> Any:
    async def handle(uow: UnitOfWork, event: Any) -> None:
        if event.refund_id == poison_id:
            raise PoisonEvent("refused by the test")
        await uow.conn.execute(COUNT, {"name": event.refund_id})

    return handle


async def main(nats_url: str, database_url: str, schema: str, name: str, poison: str) -> None:
    engine = create_engine(database_url, schema, pool_size=2)
    messaging = Messaging(nats_url, "deadletter-worker")
    connect = asyncio.create_task(messaging.connect())
    consumer = Consumer(
        name=name,
        stream="PAYMENTS",
        handlers={payment_events.RefundRequested: counting_handler(poison)},
        unit_of_work=lambda: UnitOfWork(engine, "/test"),
        messaging=messaging,
        fetch_timeout=0.2,
    )
    print("ready", flush=True)
    await consumer.run()
    connect.cancel()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
