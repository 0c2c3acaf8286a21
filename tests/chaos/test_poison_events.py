"""Scenario 13: poison events in the middle of a saga load.

While sagas run, events that can never be applied are published onto the subjects the
consumers read: bodies that are not protobuf, a `ce-type` that contradicts the subject, and
well-formed events with a bad field. Nothing blocks (every saga ends PAID), nothing is lost
(the invariants, after the scenario), every poison event ends in DEADLETTER once for every
consumer of its subject, and no real event (one from an outbox) is ever dead-lettered.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import nats
import pytest

from services.common.events import envelope, new_event
from services.shopctl.streams import dead_letters
from shop.credit.v1 import events_pb2 as credit_events
from shop.order.v1 import events_pb2 as order_events
from shop.order.v1 import order_pb2
from shop.payment.v1 import events_pb2 as payment_events
from tests.chaos.conftest import Chaos
from tests.chaos.events import publish_raw
from tests.chaos.invariants import CONSUMERS
from tests.chaos.load import approved_price, saga, top_up
from tests.e2e.shop import usd
from tests.ids import new_id

pytestmark = pytest.mark.chaos

SAGAS = 12


def poison_events() -> list[tuple[str, bytes, dict[str, str]]]:
    """(subject, body, headers) of events no consumer can ever apply; their ce-id is unique."""
    found: list[tuple[str, bytes, dict[str, str]]] = []
    succeeded = new_event(
        payment_events.PaymentSucceeded,
        payment_id=new_id(),
        order_id=new_id(),
        customer_id=new_id(),
        reservation_id=new_id(),
        amount=usd(1_000),
    )
    env = envelope(succeeded, "/chaos")
    found.append((env.subject, b"\xff\x00 not protobuf", dict(env.headers)))
    created = new_event(
        order_events.OrderCreated, order_id=new_id(), customer_id=new_id(), total=usd(500)
    )
    env = envelope(created, "/chaos")
    found.append((env.subject, env.payload, {**env.headers, "ce-type": "shop.x.v1.Other"}))
    reserved = new_event(
        credit_events.CreditsReserved,
        reservation_id=new_id(),
        order_id="not-a-uuid",
        customer_id=new_id(),
        amount=usd(700),
    )
    env = envelope(reserved, "/chaos")
    found.append((env.subject, env.payload, dict(env.headers)))
    for _subject, _body, headers in found:
        headers["Nats-Msg-Id"] = str(uuid.uuid4())
    return found


async def test_13_poison_events_mid_saga_load(chaos: Chaos) -> None:
    cluster, tracker = chaos.cluster, chaos.tracker
    nats_url = cluster.nats.url
    async with cluster.shop() as shop:
        customers = [shop.new_customer() for _ in range(SAGAS)]
        for customer in customers:
            await top_up(shop, tracker, customer, 50_000)

        async def poison_meanwhile() -> list[tuple[str, bytes, dict[str, str]]]:
            sent = []
            for _ in range(3):
                await asyncio.sleep(0.3)
                for subject, body, headers in poison_events():
                    await publish_raw(nats_url, subject, body, headers)
                    sent.append((subject, body, headers))
                    chaos.fault()
            return sent

        sagas = [saga(shop, tracker, c, approved_price(i)) for i, c in enumerate(customers)]
        poisoning = asyncio.create_task(poison_meanwhile())
        outcomes = await asyncio.gather(*sagas)
        sent = await poisoning
        assert outcomes == [order_pb2.ORDER_STATUS_PAID] * SAGAS
        chaos.sagas(SAGAS)

    # Every poison event in DEADLETTER once per consumer of its subject, with a reason.
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream(timeout=10)
        readers: dict[str, set[str]] = {}
        for durable, (stream, _schema) in CONSUMERS.items():
            info = await js.consumer_info(stream, durable)
            for subject in info.config.filter_subjects or [info.config.filter_subject]:
                readers.setdefault(str(subject), set()).add(durable)
        expected = {
            (consumer, headers["ce-id"])
            for subject, _body, headers in sent
            for consumer in readers.get(subject, set())
        }
        assert len(expected) >= len(sent)
        deadline = time.monotonic() + 60
        while True:
            letters = await dead_letters(js)
            got = [(d.consumer, d.headers.get("ce-id", "")) for d in letters]
            mine = [pair for pair in got if pair in expected]
            if set(mine) == expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert sorted(mine) == sorted(expected), "each poison event dead-lettered exactly once"
        assert all(d.reason for d in letters if (d.consumer, d.headers.get("ce-id")) in expected)
        # No real event is ever dead-lettered: every dead letter is one of the poison ones
        # (or an earlier scenario's hand-made event, never one the services published).
        db = await cluster.db()
        try:
            for schema in ("orders", "credits", "payments"):
                real = {
                    str(r["event_id"])
                    for r in await db.fetch(f"SELECT event_id FROM {schema}.outbox")
                }
                assert not real & {ce_id for _consumer, ce_id in got}, schema
        finally:
            await db.close()
    finally:
        await nc.close()
