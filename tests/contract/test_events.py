"""Every event message of proto/, checked on the live mesh and its real JetStream.

The events are those the descriptors say (the `(shop.common.v1.event_subject)` option; every
top-level message of an events.proto must carry it). Running every branch of the saga once
must publish each of them on exactly its declared subject, in CloudEvents binary mode with
`Nats-Msg-Id` = `ce-id` = `event_id`, and the body must decode with the message type compiled
from proto/. Every subject a service subscribes to must be declared by some event message.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
import nats
import pytest
from google.protobuf.message import DecodeError, Message
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.localmesh.mesh import LocalMesh
from shop.order.v1 import order_pb2, order_service_pb2
from tests.conftest import Infra
from tests.contract.conftest import CONTRACT
from tests.contract.descriptors import Event, service_consumers
from tests.e2e.shop import Shop

pytestmark = pytest.mark.e2e

# Subjects fixed by DESIGN §4: the proto options must declare exactly these (and may add).
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
DECLARED = {e.subject: e for e in CONTRACT.events if e.subject}


@dataclass
class Published:
    """One message read back from a stream of the real JetStream."""

    stream: str
    subject: str
    headers: dict[str, str]
    data: bytes


@dataclass
class SagaRun:
    customer: str
    messages: list[Published] = field(default_factory=list)

    def of_type(self, full_name: str) -> list[Published]:
        return [m for m in self.messages if m.headers.get("ce-type") == full_name]


async def run_every_flow(shop: Shop) -> str:
    """One customer through every branch of the saga; returns the customer id."""
    customer = shop.new_customer()
    rejected = await shop.create_order(customer, 500)  # no account yet
    await shop.order_in(rejected.order_id, order_pb2.ORDER_STATUS_REJECTED, timeout=60)
    await shop.top_up(customer, 100000)

    paid = await shop.reserved_order(customer, 10000)
    payment = (await shop.pay(paid)).payment
    await shop.refund(payment.payment_id, 1000)

    declined = await shop.reserved_order(customer, 10005)  # …05: card declined
    await shop.pay(declined)

    cancelled = await shop.reserved_order(customer, 300)
    await shop.order.CancelOrder(order_service_pb2.CancelOrderRequest(order_id=cancelled.order_id))
    return customer


async def read_streams(nats_url: str, customer: str) -> list[Published]:
    """Every message of every stream on the server that concerns `customer`."""
    nc = await nats.connect(nats_url)
    found: list[Published] = []
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            stream = info.config.name
            subjects = list(info.config.subjects or [])
            if not stream or not subjects:
                continue
            sub = await js.pull_subscribe(
                subjects[0] if len(subjects) == 1 else ">",
                stream=stream,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
            while True:
                try:
                    batch = await sub.fetch(500, timeout=1)
                except TimeoutError:
                    break
                for msg in batch:
                    await msg.ack()
                    if customer.encode() in msg.data:  # every event names its customer
                        found.append(
                            Published(stream, msg.subject, dict(msg.headers or {}), msg.data)
                        )
            await sub.unsubscribe()
    finally:
        await nc.close()
    return found


@pytest.fixture(scope="session")
async def saga_run(mesh: LocalMesh, infra: Infra) -> SagaRun:
    channels = {name: grpc.aio.insecure_channel(s.target) for name, s in mesh.services.items()}
    try:
        run = SagaRun(await run_every_flow(Shop.connect(channels)))
    finally:
        for channel in channels.values():
            await channel.close()
    # The outbox relays publish asynchronously: wait until every declared event is seen.
    expected = {e.full_name for e in CONTRACT.events if e.subject}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        run.messages = await read_streams(infra.nats_url, run.customer)
        seen = {m.headers.get("ce-type", "") for m in run.messages}
        if seen >= expected or loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    return run


CONSUMERS = service_consumers()


def consumers_of(event: Event) -> list[str]:
    return [
        name
        for _, consumer in CONSUMERS
        for cls in consumer.handlers
        if cls.DESCRIPTOR.full_name == event.full_name
        for name in [consumer.name]
    ]


@pytest.mark.contract("event", "declares subject")
@pytest.mark.parametrize("event", CONTRACT.events, ids=lambda e: e.id)
def test_the_event_message_declares_its_subject(event: Event) -> None:
    assert event.subject, (
        f"{event.full_name} ({event.file}) declares no subject: add "
        'option (shop.common.v1.event_subject) = "<stream>.<what_happened>";'
    )
    owners = [e.full_name for e in CONTRACT.events if e.subject == event.subject]
    assert owners == [event.full_name], f"subject {event.subject} declared by {owners}"


@pytest.mark.contract("event", "published")
@pytest.mark.parametrize("event", CONTRACT.events, ids=lambda e: e.id)
def test_the_saga_publishes_the_event_on_its_subject(event: Event, saga_run: SagaRun) -> None:
    published = saga_run.of_type(event.full_name)
    assert published, (
        f"{event.full_name} (subject {event.subject or 'none'}) was never published while "
        "running every branch of the saga"
    )
    for message in published:
        assert message.subject == event.subject, (
            f"{event.full_name} published on {message.subject}, declared {event.subject}"
        )


@pytest.mark.contract("event", "headers")
@pytest.mark.parametrize("event", CONTRACT.events, ids=lambda e: e.id)
def test_the_event_carries_its_cloudevents_headers(event: Event, saga_run: SagaRun) -> None:
    published = saga_run.of_type(event.full_name)
    assert published, f"{event.full_name} was never published"
    for message in published:
        headers = message.headers
        assert headers.get("Nats-Msg-Id"), f"{event.full_name} without Nats-Msg-Id"
        assert headers["Nats-Msg-Id"] == headers.get("ce-id"), headers
        assert headers.get("ce-specversion") == "1.0", headers
        assert headers.get("content-type") == "application/protobuf", headers
        assert headers.get("ce-source", "").startswith("/shop/"), headers
        assert headers.get("ce-time"), headers


@pytest.mark.contract("event", "decodes")
@pytest.mark.parametrize("event", CONTRACT.events, ids=lambda e: e.id)
def test_the_payload_decodes_with_the_declared_type(event: Event, saga_run: SagaRun) -> None:
    published = saga_run.of_type(event.full_name)
    assert published, f"{event.full_name} was never published"
    cls = CONTRACT.message_class(event.full_name)
    for message in published:
        try:
            decoded: Message = cls.FromString(message.data)
        except DecodeError as error:
            raise AssertionError(f"{event.full_name} payload does not decode: {error}") from None
        assert decoded.event_id == message.headers["ce-id"]  # type: ignore[attr-defined]
        assert decoded.customer_id == saga_run.customer  # type: ignore[attr-defined]
        assert decoded.HasField("occurred_at"), event.full_name


@pytest.mark.contract("event", "consumed subject declared")
@pytest.mark.parametrize("event", CONTRACT.events, ids=lambda e: e.id)
def test_the_event_is_consumed_only_on_its_declared_subject(event: Event) -> None:
    for consumer_name in consumers_of(event):
        consumer = next(c for _, c in CONSUMERS if c.name == consumer_name)
        assert event.subject in consumer.subjects, (
            f"consumer {consumer_name} handles {event.full_name} but subscribes to "
            f"{consumer.subjects}, not its declared subject {event.subject!r}"
        )


def test_every_published_message_is_a_declared_event(saga_run: SagaRun) -> None:
    declared_types = {e.full_name for e in CONTRACT.events if e.subject}
    strangers = {
        (m.subject, m.headers.get("ce-type", "<no ce-type>"))
        for m in saga_run.messages
        if m.headers.get("ce-type") not in declared_types
    }
    assert not strangers, f"published but not declared as events in proto/: {sorted(strangers)}"


def test_every_subscribed_subject_is_declared_by_an_event() -> None:
    assert CONSUMERS, "no service defines a consumer: the saga cannot run"
    undeclared = [
        f"{service}/{consumer.name} subscribes to {subject!r} "
        f"(handler for {', '.join(sorted(c.DESCRIPTOR.full_name for c in consumer.handlers))})"
        for service, consumer in CONSUMERS
        for subject in consumer.subjects
        if subject not in DECLARED
    ]
    assert not undeclared, "subscribed subjects no event message declares: " + "; ".join(undeclared)


async def test_the_live_durable_consumers_filter_only_declared_subjects(
    mesh: LocalMesh, infra: Infra
) -> None:
    """What the running services actually subscribed to on the real JetStream."""
    expected = {consumer.name for _, consumer in CONSUMERS}
    nc = await nats.connect(infra.nats_url)
    try:
        js = nc.jetstream()
        live: dict[str, list[str]] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not expected <= set(live) and loop.time() < deadline:
            for info in await js.streams_info():
                for consumer in await js.consumers_info(info.config.name or ""):
                    config = consumer.config
                    if config.durable_name in expected:
                        subjects = list(config.filter_subjects or [])
                        subjects += [config.filter_subject] if config.filter_subject else []
                        live[config.durable_name] = subjects
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
    assert expected <= set(live), f"durable consumers not found: {sorted(expected - set(live))}"
    undeclared = {n: [s for s in subs if s not in DECLARED] for n, subs in live.items()}
    assert not any(undeclared.values()), f"live consumers on undeclared subjects: {undeclared}"


def test_the_proto_declares_the_design_subjects() -> None:
    declared = {subject: event.full_name for subject, event in DECLARED.items()}
    for subject, type_name in DESIGN_SUBJECTS.items():
        assert declared.get(subject) == type_name, (subject, declared.get(subject))


def test_one_payment_outcome_is_announced_once(saga_run: SagaRun) -> None:
    """One payment succeeded and one failed: exactly one event each, whatever the retries."""
    assert len(saga_run.of_type("shop.payment.v1.PaymentSucceeded")) == 1
    assert len(saga_run.of_type("shop.payment.v1.PaymentFailed")) == 1
