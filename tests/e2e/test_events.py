"""Every event of DESIGN §4 is published on its subject, in CloudEvents binary mode, with
`Nats-Msg-Id` = event id, and decodes with the message type the proto names for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import nats
import pytest
from google.protobuf.message import Message
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.common.events import EVENT_TYPES, STREAMS, subject_of
from services.localmesh.mesh import LocalMesh
from shop.order.v1 import order_pb2, order_service_pb2
from tests.conftest import Infra
from tests.e2e.shop import Shop

pytestmark = pytest.mark.e2e

# Subjects fixed by the design; the proto options must declare exactly these (and may add).
DESIGN_SUBJECTS = {
    "orders.created": "shop.order.v1.OrderCreated",
    "orders.cancelled": "shop.order.v1.OrderCancelled",
    "credits.reserved": "shop.credit.v1.CreditsReserved",
    "credits.reservation_failed": "shop.credit.v1.CreditReservationFailed",
    "credits.released": "shop.credit.v1.CreditsReleased",
    "credits.captured": "shop.credit.v1.CreditsCaptured",
    "payments.requested": "shop.payment.v1.PaymentRequested",
    "payments.succeeded": "shop.payment.v1.PaymentSucceeded",
    "payments.failed": "shop.payment.v1.PaymentFailed",
    "payments.refund_requested": "shop.payment.v1.RefundRequested",
    "payments.refunded": "shop.payment.v1.PaymentRefunded",
}


@pytest.fixture
async def shop(mesh: LocalMesh) -> AsyncIterator[Shop]:
    channels = {name: grpc.aio.insecure_channel(s.target) for name, s in mesh.services.items()}
    try:
        yield Shop.connect(channels)
    finally:
        for channel in channels.values():
            await channel.close()


def test_the_proto_declares_the_design_subjects() -> None:
    declared = {subject_of(cls.DESCRIPTOR): name for name, cls in EVENT_TYPES.items()}
    for subject, type_name in DESIGN_SUBJECTS.items():
        assert declared.get(subject) == type_name


async def run_every_flow(shop: Shop) -> str:
    """One customer through every branch of the saga; returns the customer id."""
    customer = shop.new_customer()
    rejected = await shop.create_order(customer, 500)  # no account yet
    await shop.order_in(rejected.order_id, order_pb2.ORDER_STATUS_REJECTED)
    await shop.top_up(customer, 100000)

    paid = await shop.reserved_order(customer, 10000)
    payment = (await shop.pay(paid)).payment
    await shop.refund(payment.payment_id, 1000)

    declined = await shop.reserved_order(customer, 10005)  # …05: card declined
    await shop.pay(declined)

    cancelled = await shop.reserved_order(customer, 300)
    await shop.order.CancelOrder(order_service_pb2.CancelOrderRequest(order_id=cancelled.order_id))
    return customer


async def events_of(
    nats_url: str, customer: str
) -> dict[str, list[tuple[Message, dict[str, str]]]]:
    nc = await nats.connect(nats_url)
    found: dict[str, list[tuple[Message, dict[str, str]]]] = {}
    try:
        js = nc.jetstream()
        for stream, subjects in STREAMS.items():
            sub = await js.pull_subscribe(
                subjects, stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
            )
            while True:
                try:
                    batch = await sub.fetch(500, timeout=1)
                except TimeoutError:
                    break
                for msg in batch:
                    headers = dict(msg.headers or {})
                    cls = EVENT_TYPES.get(headers.get("ce-type", ""))
                    if cls is None:
                        continue
                    event = cls.FromString(msg.data)
                    if getattr(event, "customer_id", "") == customer:
                        found.setdefault(msg.subject, []).append((event, headers))
                    await msg.ack()
            await sub.unsubscribe()
    finally:
        await nc.close()
    return found


async def test_every_event_is_on_its_subject_with_its_type_and_id(shop: Shop, infra: Infra) -> None:
    customer = await run_every_flow(shop)
    expected = {subject_of(cls.DESCRIPTOR) for cls in EVENT_TYPES.values()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        found = await events_of(infra.nats_url, customer)
        if set(found) >= expected or loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert set(found) >= expected, f"missing: {sorted(expected - set(found))}"

    for subject, events in found.items():
        for event, headers in events:
            assert type(event).DESCRIPTOR.full_name == headers["ce-type"]
            assert subject_of(type(event).DESCRIPTOR) == subject
            assert headers["Nats-Msg-Id"] == headers["ce-id"] == event.event_id  # type: ignore[attr-defined]
            assert headers["ce-specversion"] == "1.0"
            assert headers["content-type"] == "application/protobuf"
            assert headers["ce-source"].startswith("/shop/")
            assert event.HasField("occurred_at")
    # One payment succeeded and one failed: exactly one event each, whatever the retries.
    assert len(found["payments.succeeded"]) == 1
    assert len(found["payments.failed"]) == 1
