"""Traces of a real three-process mesh over real OTLP: one saga is one trace, across gRPC
and NATS, in the parent/child order of docs/observability.md; and with no OTEL_* setting,
no span at all."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
import nats
import pytest

from services.common import tracing
from services.localmesh.embedded import EmbeddedNats
from services.localmesh.mesh import LocalMesh
from shop.order.v1 import order_pb2
from tests.conftest import Infra
from tests.e2e.shop import Shop
from tests.observability.otlp import Receiver, Span

pytestmark = pytest.mark.e2e

SERVER, CLIENT, CONSUMER = 2, 3, 5  # OTLP span kinds
CLIENT_TRACE = secrets.token_hex(16)
CLIENT_SPAN = secrets.token_hex(8)


class SendTraceparent(grpc.aio.UnaryUnaryClientInterceptor):
    """The test's calls are the root span of the saga's trace, as a gateway's would be."""

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
        details = grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )
        return await continuation(details, request)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def traced_mesh(
    infra: Infra, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalMesh]:
    """Its own NATS: the session's mesh has durable consumers of the same names there."""
    root = tmp_path_factory.mktemp("traced")
    own_nats = EmbeddedNats(root / "nats", preferred_port=0)
    own_nats.start()
    mesh = LocalMesh(
        data_dir=root,
        database_url=asyncio.run(infra.create_database("traced")),
        nats_url=own_nats.url,
        ports={"order": 0, "credit": 0, "payment": 0},
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    try:
        mesh.start()
        yield mesh
    finally:
        mesh.stop()
        own_nats.stop()


async def connect(mesh: LocalMesh, *interceptors: Any) -> tuple[Shop, list[grpc.aio.Channel]]:
    channels = {
        name: grpc.aio.insecure_channel(s.target, interceptors=list(interceptors))
        for name, s in mesh.services.items()
    }
    return Shop.connect(channels), list(channels.values())


@pytest.fixture
async def traced_shop(traced_mesh: LocalMesh) -> AsyncIterator[Shop]:
    shop, channels = await connect(traced_mesh, SendTraceparent())
    yield shop
    for channel in channels:
        await channel.close()


def one(spans: list[Span], **match: Any) -> Span:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, f"{len(found)} spans match {match}: {found}"
    return found[0]


def consumer_of(spans: list[Span], service: str, subject: str) -> Span:
    found = [
        s
        for s in spans
        if s.service == service
        and s.kind == CONSUMER
        and s.attributes.get("messaging.destination.name") == subject
    ]
    assert len(found) == 1, f"{service} consumer spans of {subject}: {found}"
    return found[0]


async def test_one_saga_is_one_trace_across_grpc_and_nats(
    traced_mesh: LocalMesh, traced_shop: Shop, receiver: Receiver
) -> None:
    customer = traced_shop.new_customer()
    await traced_shop.top_up(customer, 10_000)
    order = await traced_shop.reserved_order(customer, 2500)
    await traced_shop.pay(order)
    await traced_shop.order_in(order.order_id, order_pb2.ORDER_STATUS_PAID)

    def complete(spans: list[Span]) -> bool:
        consumers = {(s.service, s.attributes.get("messaging.destination.name")) for s in spans}
        return {
            ("credit", "orders.created"),
            ("order", "credits.reserved"),
            ("order", "payments.succeeded"),
            ("credit", "payments.succeeded"),
        } <= consumers

    deadline = time.monotonic() + 20
    while not complete(spans := [s for s in receiver.spans() if s.trace_id == CLIENT_TRACE]):
        assert time.monotonic() < deadline, f"incomplete trace: {spans}"
        await asyncio.sleep(0.2)

    assert {s.service for s in spans} == {"order", "credit", "payment"}
    # CreateOrder → orders.created → Credit's reserve → credits.reserved → Order's update
    create = one(
        spans, service="order", kind=SERVER, name="/shop.order.v1.OrderService/CreateOrder"
    )
    assert create.parent_span_id == CLIENT_SPAN
    reserve = consumer_of(spans, "credit", "orders.created")
    assert reserve.parent_span_id == create.span_id
    assert reserve.attributes["messaging.message.id"]  # the event id
    reserved = consumer_of(spans, "order", "credits.reserved")
    assert reserved.parent_span_id == reserve.span_id

    # ProcessPayment → GetOrder, GetReservation → payments.succeeded → Order's and Credit's
    # effects
    pay = one(
        spans, service="payment", kind=SERVER, name="/shop.payment.v1.PaymentService/ProcessPayment"
    )
    assert pay.parent_span_id == CLIENT_SPAN
    for service, method in (
        ("order", "/shop.order.v1.OrderService/GetOrder"),
        ("credit", "/shop.credit.v1.CreditService/GetReservation"),
    ):
        call = one(spans, service="payment", kind=CLIENT, name=method)
        assert call.parent_span_id == pay.span_id
        # (the test's own polling GetOrder calls are children of its span, not of this one)
        one(spans, service=service, kind=SERVER, name=method, parent_span_id=call.span_id)
    for service in ("order", "credit"):
        assert consumer_of(spans, service, "payments.succeeded").parent_span_id == pay.span_id

    # the log lines written in the saga's spans carry its trace id
    lines = [
        json.loads(line)
        for line in (traced_mesh.services["payment"].log_path.read_text().splitlines())
        if line.startswith("{")
    ]
    mine = [line for line in lines if line.get("trace_id") == CLIENT_TRACE]
    assert any(line.get("rpc", "").endswith("/ProcessPayment") for line in mine)
    assert all(len(line["span_id"]) == 16 for line in mine)
    # Payment forwards its caller's request id: Order logs GetOrder under the same one
    (paying,) = [line for line in mine if line.get("rpc", "").endswith("/ProcessPayment")]
    order_lines = [
        json.loads(line)
        for line in traced_mesh.services["order"].log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    assert any(
        line.get("rpc", "").endswith("/GetOrder") and line.get("request_id") == paying["request_id"]
        for line in order_lines
    )


async def test_no_otel_setting_no_span(mesh: LocalMesh, infra: Infra) -> None:
    """The session's mesh runs with no OTEL_* variable: its events carry no traceparent and
    its log lines no trace id, even for a call that sends one."""
    assert not any(name.startswith("OTEL_") for name in mesh.service_env())
    assert not tracing.configured({})
    shop, channels = await connect(mesh, SendTraceparent())
    client = await nats.connect(infra.nats_url)
    try:
        js = client.jetstream()
        sub = await js.subscribe("orders.created", ordered_consumer=True)
        customer = shop.new_customer()
        created = await shop.create_order(customer, 1000)
        deadline = time.monotonic() + 10
        while True:
            msg = await sub.next_msg(timeout=max(0.1, deadline - time.monotonic()))
            if created.order_id.encode() in msg.data:
                break
        assert msg.headers
        assert msg.headers["ce-type"] == "shop.order.v1.OrderCreated"
        assert "traceparent" not in msg.headers, msg.headers
    finally:
        await client.close()
        for channel in channels:
            await channel.close()
    log_text = mesh.services["order"].log_path.read_text()
    assert '"trace_id"' not in log_text


def test_tracing_is_configured_only_by_an_exporter_setting() -> None:
    assert tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert tracing.configured({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.configured({"OTEL_SERVICE_NAME": "order"})  # no exporter: off
    assert not tracing.configured(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"}
    )
    assert not tracing.configured({"OTEL_TRACES_EXPORTER": "none"})
    assert not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"), "the suite runs with tracing off"
