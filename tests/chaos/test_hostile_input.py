"""Scenario 9: bad and hostile input on every RPC, and garbage on the event subjects.

Every bad request gets a clear status with details (never INTERNAL or UNKNOWN), an oversized
one RESOURCE_EXHAUSTED, and none changes any state; a garbage message on a subject is
terminated by the consumer and the services carry on. A property-based test (Hypothesis)
generates requests for every RPC from the proto descriptors.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import functools
import json
import os
import struct
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.localmesh.mesh import SERVICES, health_status
from shop.common.v1.money_pb2 import Money
from shop.credit.v1 import credit_service_pb2
from shop.order.v1 import order_pb2, order_service_pb2
from shop.payment.v1 import payment_pb2, payment_service_pb2
from tests.chaos.cluster import Cluster
from tests.chaos.conftest import Chaos
from tests.chaos.events import publish_raw
from tests.chaos.load import create_order, order_until, retrying, saga, top_up
from tests.e2e.conftest import rich_status
from tests.e2e.connect_http import ConnectHttp
from tests.e2e.shop import usd
from tests.ids import new_id

pytestmark = pytest.mark.chaos

FILES = {
    "order": order_service_pb2.DESCRIPTOR,
    "credit": credit_service_pb2.DESCRIPTOR,
    "payment": payment_service_pb2.DESCRIPTOR,
}
NEVER = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DATA_LOSS,
}
TABLES = (
    "orders.orders",
    "orders.outbox",
    "orders.idempotency_keys",
    "credits.accounts",
    "credits.reservations",
    "credits.outbox",
    "credits.idempotency_keys",
    "payments.payments",
    "payments.refunds",
    "payments.outbox",
    "payments.idempotency_keys",
)
INT64 = 2**63 - 1


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def methods() -> list[tuple[str, MethodDescriptor]]:
    found = []
    for name, file in FILES.items():
        for service in file.services_by_name.values():
            found += [(name, method) for method in service.methods]
    return found


def call(channel: grpc.Channel, method: MethodDescriptor, request: Message) -> Any:
    output = GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    if method.server_streaming:  # WatchOrder: its first message is the answer
        stream: Any = channel.unary_stream(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=output.FromString,
        )
        responses = stream(request, timeout=15)
        try:
            return next(responses)
        finally:
            responses.cancel()
    stub: Any = channel.unary_unary(
        path,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=output.FromString,
    )
    return stub(request, timeout=15)


def snapshot_sync(cluster: Cluster) -> dict[str, int]:
    return asyncio.run(snapshot(cluster))


async def snapshot(cluster: Cluster) -> dict[str, int]:
    db = await cluster.db()
    try:
        return {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES} | {
            "accounts.sum": await db.fetchval(
                "SELECT coalesce(sum(topped_up + available + reserved + spent), 0)"
                " FROM credits.accounts"
            )
        }
    finally:
        await db.close()


def assert_clear_refusal(error: grpc.RpcError, *codes: grpc.StatusCode) -> None:
    assert isinstance(error, grpc.RpcError)
    code = error.code()
    assert code not in NEVER, (code, error.details())
    if codes:
        assert code in codes, (code, error.details())
    if code != grpc.StatusCode.RESOURCE_EXHAUSTED:  # refused by gRPC itself, before us
        info, _ = rich_status(error)
        assert info is not None, ("no ErrorInfo", code, error.details())


async def test_9_hostile_input_on_every_rpc(chaos: Chaos) -> None:
    cluster, tracker = chaos.cluster, chaos.tracker
    async with cluster.shop() as shop:
        customer = shop.new_customer()
        await top_up(shop, tracker, customer, 100_000)
        order = await create_order(shop, tracker, customer, 1_500)
        order = await order_until(shop, tracker, order.order_id, (order_pb2.ORDER_STATUS_RESERVED,))
        chaos.sagas()
        await chaos.check()
        before = await snapshot(cluster)

        bad = "not-a-uuid"
        item = order_pb2.OrderItem(sku="SKU-1", quantity=1, unit_price=usd(100))
        ok_pay: dict[str, Any] = {
            "order_id": order.order_id,
            "customer_id": customer,
            "reservation_id": order.reservation_id,
            "amount": order.total,
            "payment_method": payment_pb2.PAYMENT_METHOD_CREDIT_CARD,
            "request_id": new_id(),
        }
        huge = "x" * (10 * 1024 * 1024)
        cases: list[tuple[str, Callable[[], Any], tuple[grpc.StatusCode, ...]]] = []
        invalid = (grpc.StatusCode.INVALID_ARGUMENT,)

        def case(what: str, rpc: Callable[[], Any], *codes: grpc.StatusCode) -> None:
            cases.append((what, rpc, codes or invalid))

        ca, oa, pa = shop.credit, shop.order, shop.payment
        cr, orq, pr = credit_service_pb2, order_service_pb2, payment_service_pb2
        case(
            "TopUp bad customer",
            lambda: ca.TopUpCredits(
                cr.TopUpCreditsRequest(customer_id=bad, amount=usd(1), request_id=new_id())
            ),
        )
        case(
            "TopUp bad request_id",
            lambda: ca.TopUpCredits(
                cr.TopUpCreditsRequest(customer_id=customer, amount=usd(1), request_id=bad)
            ),
        )
        case(
            "TopUp negative",
            lambda: ca.TopUpCredits(
                cr.TopUpCreditsRequest(customer_id=customer, amount=usd(-5), request_id=new_id())
            ),
        )
        case(
            "TopUp zero",
            lambda: ca.TopUpCredits(
                cr.TopUpCreditsRequest(customer_id=customer, amount=usd(0), request_id=new_id())
            ),
        )
        case(
            "TopUp overflowing balance",
            lambda: ca.TopUpCredits(
                cr.TopUpCreditsRequest(customer_id=customer, amount=usd(INT64), request_id=new_id())
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.OUT_OF_RANGE,
        )
        case(
            "TopUp other currency",
            lambda: ca.TopUpCredits(
                cr.TopUpCreditsRequest(
                    customer_id=customer,
                    amount=Money(currency_code="EUR", minor_units=100),
                    request_id=new_id(),
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        case(
            "TopUp junk currency",
            lambda: ca.TopUpCredits(
                cr.TopUpCreditsRequest(
                    customer_id=customer,
                    amount=Money(currency_code="usd!", minor_units=100),
                    request_id=new_id(),
                )
            ),
        )
        case(
            "GetCreditAccount bad id",
            lambda: ca.GetCreditAccount(cr.GetCreditAccountRequest(customer_id=bad)),
        )
        case(
            "GetReservation bad id",
            lambda: ca.GetReservation(cr.GetReservationRequest(reservation_id=bad)),
        )
        case(
            "ListReservations bad token",
            lambda: ca.ListReservations(
                cr.ListReservationsRequest(customer_id=customer, page_token="garbage")
            ),
        )
        case(
            "ListReservations negative size",
            lambda: ca.ListReservations(
                cr.ListReservationsRequest(customer_id=customer, page_size=-1)
            ),
        )
        case(
            "CreateOrder bad customer",
            lambda: oa.CreateOrder(
                orq.CreateOrderRequest(customer_id=bad, items=[item], request_id=new_id())
            ),
        )
        case(
            "CreateOrder no items",
            lambda: oa.CreateOrder(
                orq.CreateOrderRequest(customer_id=customer, request_id=new_id())
            ),
        )
        case(
            "CreateOrder negative price",
            lambda: oa.CreateOrder(
                orq.CreateOrderRequest(
                    customer_id=customer,
                    items=[order_pb2.OrderItem(sku="S", quantity=1, unit_price=usd(-1))],
                    request_id=new_id(),
                )
            ),
        )
        case(
            "CreateOrder negative quantity",
            lambda: oa.CreateOrder(
                orq.CreateOrderRequest(
                    customer_id=customer,
                    items=[order_pb2.OrderItem(sku="S", quantity=-3, unit_price=usd(100))],
                    request_id=new_id(),
                )
            ),
        )
        case(
            "CreateOrder overflowing total",
            lambda: oa.CreateOrder(
                orq.CreateOrderRequest(
                    customer_id=customer,
                    items=[order_pb2.OrderItem(sku="S", quantity=2**31 - 1, unit_price=usd(INT64))],
                    request_id=new_id(),
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.OUT_OF_RANGE,
        )
        case(
            "CreateOrder overflowing sum",
            lambda: oa.CreateOrder(
                orq.CreateOrderRequest(
                    customer_id=customer,
                    items=[
                        order_pb2.OrderItem(sku="A", quantity=1, unit_price=usd(INT64)),
                        order_pb2.OrderItem(sku="B", quantity=1, unit_price=usd(INT64)),
                    ],
                    request_id=new_id(),
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.OUT_OF_RANGE,
        )
        case(
            "CreateOrder mixed currencies",
            lambda: oa.CreateOrder(
                orq.CreateOrderRequest(
                    customer_id=customer,
                    items=[
                        item,
                        order_pb2.OrderItem(
                            sku="E",
                            quantity=1,
                            unit_price=Money(currency_code="EUR", minor_units=100),
                        ),
                    ],
                    request_id=new_id(),
                )
            ),
        )
        case(
            "CreateOrder NUL in sku",
            lambda: oa.CreateOrder(
                orq.CreateOrderRequest(
                    customer_id=customer,
                    items=[order_pb2.OrderItem(sku="A\x00B", quantity=1, unit_price=usd(100))],
                    request_id=new_id(),
                )
            ),
        )
        case(
            "CreateOrder 10 MB",
            lambda: oa.CreateOrder(
                orq.CreateOrderRequest(
                    customer_id=customer,
                    items=[order_pb2.OrderItem(sku=huge, quantity=1, unit_price=usd(100))],
                    request_id=new_id(),
                )
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        case(
            "TopUp 10 MB",
            lambda: ca.TopUpCredits(
                cr.TopUpCreditsRequest(customer_id=huge, amount=usd(1), request_id=new_id())
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        case(
            "ProcessPayment 10 MB",
            lambda: pa.ProcessPayment(pr.ProcessPaymentRequest(**{**ok_pay, "customer_id": huge})),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        case("GetOrder bad id", lambda: oa.GetOrder(orq.GetOrderRequest(order_id=bad)))
        case(
            "ListOrders bad customer", lambda: oa.ListOrders(orq.ListOrdersRequest(customer_id=bad))
        )
        case(
            "CancelOrder NUL in reason",
            lambda: oa.CancelOrder(
                orq.CancelOrderRequest(order_id=order.order_id, reason="a\x00b")
            ),
        )
        case(
            "RefundPayment NUL in reason",
            lambda: pa.RefundPayment(
                pr.RefundPaymentRequest(payment_id=new_id(), reason="a\x00b", request_id=new_id())
            ),
        )
        case("CancelOrder bad id", lambda: oa.CancelOrder(orq.CancelOrderRequest(order_id=bad)))
        case(
            "ProcessPayment bad order",
            lambda: pa.ProcessPayment(pr.ProcessPaymentRequest(**{**ok_pay, "order_id": bad})),
        )
        case(
            "ProcessPayment unknown method",
            lambda: pa.ProcessPayment(
                pr.ProcessPaymentRequest(**{**ok_pay, "payment_method": 99, "request_id": new_id()})
            ),
        )
        case(
            "ProcessPayment negative",
            lambda: pa.ProcessPayment(
                pr.ProcessPaymentRequest(**{**ok_pay, "amount": usd(-1500), "request_id": new_id()})
            ),
        )
        case(
            "ProcessPayment overflowing",
            lambda: pa.ProcessPayment(
                pr.ProcessPaymentRequest(**{**ok_pay, "amount": usd(INT64), "request_id": new_id()})
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        case(
            "ProcessPayment other currency",
            lambda: pa.ProcessPayment(
                pr.ProcessPaymentRequest(
                    **{
                        **ok_pay,
                        "amount": Money(currency_code="EUR", minor_units=1500),
                        "request_id": new_id(),
                    }
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        case(
            "ProcessPayment someone else's order",
            lambda: pa.ProcessPayment(
                pr.ProcessPaymentRequest(
                    **{**ok_pay, "customer_id": new_id(), "request_id": new_id()}
                )
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        case("GetPayment bad id", lambda: pa.GetPayment(pr.GetPaymentRequest(payment_id=bad)))
        case(
            "ListPayments bad order", lambda: pa.ListPayments(pr.ListPaymentsRequest(order_id=bad))
        )
        case(
            "RefundPayment bad id",
            lambda: pa.RefundPayment(pr.RefundPaymentRequest(payment_id=bad, request_id=new_id())),
        )
        case(
            "RefundPayment negative",
            lambda: pa.RefundPayment(
                pr.RefundPaymentRequest(payment_id=new_id(), amount=usd(-1), request_id=new_id())
            ),
        )

        # Crafted page tokens: wrong types, deep nesting, a forged signature, far too long.
        crafted = {
            "wrong types": _b64(b'{"t": 1, "i": [2], "q": {"x": 3}}'),
            "nested": _b64(b"[" * 5000 + b"]" * 5000),
            "forged": _b64(b'{"t":"2026-01-01T00:00:00+00:00","i":"x","q":"y"}') + "." + "A" * 43,
            "long": "A" * 100_000,
        }
        for kind, token in crafted.items():
            case(
                f"ListOrders token {kind}",
                functools.partial(
                    oa.ListOrders, orq.ListOrdersRequest(customer_id=customer, page_token=token)
                ),
            )
            case(
                f"ListReservations token {kind}",
                functools.partial(
                    ca.ListReservations,
                    cr.ListReservationsRequest(customer_id=customer, page_token=token),
                ),
            )
            case(
                f"ListPayments token {kind}",
                functools.partial(
                    pa.ListPayments, pr.ListPaymentsRequest(customer_id=customer, page_token=token)
                ),
            )

        refused: dict[str, grpc.StatusCode] = {}
        for what, rpc, codes in cases:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await rpc()
            try:
                assert_clear_refusal(error.value, *codes)
            except AssertionError as failure:
                raise AssertionError(f"{what}: {failure}") from None
            refused[what] = error.value.code()
        chaos.fault(len(cases))
        assert await snapshot(cluster) == before, "a refused request changed some state"

        # garbage bytes on every subject a consumer reads, with and without a type header
        headers_variants: list[dict[str, str]] = [
            {},
            {"ce-type": "shop.order.v1.OrderCreated"},
            {"ce-type": "shop.payment.v1.PaymentSucceeded"},
            {"ce-type": "no.such.Type"},
        ]
        subjects = [
            "orders.created",
            "orders.cancelled",
            "credits.reserved",
            "payments.succeeded",
            "payments.refunded",
            "orders.unknown",
        ]
        sent = 0
        for subject in subjects:
            for headers in headers_variants:
                await publish_raw(
                    cluster.nats.url, subject, os.urandom(64), {**headers, "Nats-Msg-Id": new_id()}
                )
                sent += 1
        # a well-formed event whose id is not a UUID
        await publish_raw(
            cluster.nats.url, "orders.created", b"\x0a\x03abc", {"Nats-Msg-Id": new_id()}
        )
        chaos.fault(sent + 1)
        await chaos.check()
        for name, (_, _, service) in SERVICES.items():
            assert cluster.running(name), f"{name} died"
            assert (
                await asyncio.to_thread(health_status, cluster.target(name), service) == "SERVING"
            )
        assert await snapshot(cluster) == before
        # … and the mesh still works
        other = shop.new_customer()
        await top_up(shop, tracker, other, 10_000)
        assert await saga(shop, tracker, other, 2_000) == order_pb2.ORDER_STATUS_PAID
        chaos.sagas()

        # An oversized list: 64 orders of 500 items with the longest SKUs (about 4.5 MB) asked
        # for in one page of 1000 come in smaller pages that fit, each order once.
        lister = shop.new_customer()
        items = [
            order_pb2.OrderItem(sku=f"{n:03d}".ljust(128, "S"), quantity=1, unit_price=usd(1))
            for n in range(500)
        ]
        big: list[str] = []
        for _ in range(64):
            request = orq.CreateOrderRequest(customer_id=lister, items=items, request_id=new_id())
            big.append(
                (await retrying(functools.partial(oa.CreateOrder, request), tracker)).order.order_id
            )
        listed: list[str] = []
        token = ""
        while True:
            page = await oa.ListOrders(
                orq.ListOrdersRequest(customer_id=lister, page_size=1000, page_token=token)
            )
            assert page.ByteSize() <= 4 * 1024 * 1024
            listed += [o.order_id for o in page.orders]
            token = page.next_page_token
            if not token:
                break
        assert listed == list(reversed(big))


# -- property-based: requests generated from the proto descriptors ---------------------------

_STRINGS = st.one_of(
    st.uuids().map(str),
    st.sampled_from(
        [
            "",
            "not-a-uuid",
            "USD",
            "EUR",
            "usd",
            "XX",
            "00000000-0000-0000-0000-000000000000",
            "' OR 1=1 --",
            "A\x00B",
            "💸",
            "é" * 200,
            "PAYMENT_METHOD_CREDIT_CARD",
        ]
    ),
    st.text(max_size=30),
)
_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in (low, high, -1, 0, 1, 100, 10**6) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        return message_strategy(field.message_type, depth + 1)
    if kind == FieldDescriptor.TYPE_STRING:
        return _STRINGS
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=32)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32, allow_nan=True)
    if kind == FieldDescriptor.TYPE_ENUM:  # known values and unknown numbers
        assert field.enum_type is not None
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), _integers(-(2**31), 2**31 - 1))
    low, high = _BOUNDS[kind]
    return _integers(low, high)


def message_strategy(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        value = _field(field, depth)
        if field.is_repeated:
            value = st.lists(value, max_size=3)
        optional[field.name] = value
    return st.fixed_dictionaries({}, optional=optional).map(lambda fields: cls(**fields))


def _property(
    channel: grpc.Channel,
    method: MethodDescriptor,
    calls: dict[str, int],
    answered: dict[str, int],
) -> Callable[[], None]:
    @settings(
        max_examples=25,
        deadline=None,
        database=None,  # a failure prints its seed and example; no local example database
        suppress_health_check=list(HealthCheck),
    )
    @given(request=message_strategy(method.input_type))
    def property_(request: Message) -> None:
        calls[method.name] = calls.get(method.name, 0) + 1
        try:
            call(channel, method, request)
        except grpc.RpcError as error:
            assert_clear_refusal(error)
            return
        answered[method.name] = answered.get(method.name, 0) + 1

    return property_


async def test_9_property_based_requests_from_descriptors(chaos: Chaos) -> None:
    cluster = chaos.cluster
    calls: dict[str, int] = {}
    answered: dict[str, int] = {}
    channels = {name: grpc.insecure_channel(cluster.target(name)) for name in SERVICES}
    try:
        for name, method in methods():
            property_ = _property(channels[name], method, calls, answered)
            await asyncio.to_thread(property_)
    finally:
        for channel in channels.values():
            channel.close()
    chaos.fault(sum(calls.values()))
    assert len(calls) == len(methods()) == 13  # every RPC of the contract, WatchOrder included
    for name in SERVICES:
        assert cluster.running(name), f"{name} died"


# The HTTP/JSON door (DESIGN §9): the same hostility as JSON, arbitrary JSON and raw bytes.
CONNECT_NEVER = {"internal", "unknown", "unimplemented", "data_loss"}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | _integers(-(2**70), 2**70) | st.floats() | _STRINGS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_STRINGS, inner, max_size=3),
    max_leaves=8,
)


def _connect_body(method: MethodDescriptor) -> st.SearchStrategy[tuple[str, bytes]]:
    as_json = message_strategy(method.input_type).map(
        lambda message: ("application/json", json_format.MessageToJson(message).encode())
    )
    any_json = JSON_VALUES.map(lambda value: ("application/json", json.dumps(value).encode()))
    raw = st.binary(max_size=64).map(lambda data: ("application/proto", data))
    return st.one_of(as_json, any_json, raw)


def _connect_property(
    door: ConnectHttp, method: MethodDescriptor, codes: collections.Counter[str]
) -> Callable[[], None]:
    path = f"/{method.containing_service.full_name}/{method.name}"

    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=_connect_body(method))
    def property_(body: tuple[str, bytes]) -> None:
        content_type, data = body
        headers = {"Content-Type": content_type, "Connect-Timeout-Ms": "1000"}
        if method.server_streaming:
            headers["Content-Type"] = content_type.replace("/", "/connect+")
            data = struct.pack(">BI", 0, len(data)) + data
        answer = door.request(path, data, headers=headers)
        assert answer.status != 500, (path, body, answer.body[:300])
        if method.server_streaming and answer.status == 200:
            code = _stream_end_code(answer.body)
        else:
            code = answer.code if answer.status != 200 else "ok"
        codes[code] += 1
        assert code not in CONNECT_NEVER, (path, body, answer.body[:300])

    return property_


def _stream_end_code(body: bytes) -> str:
    while body:
        flags, length = struct.unpack(">BI", body[:5])
        data, body = body[5 : 5 + length], body[5 + length :]
        if flags & 0x02:
            return str(json.loads(data).get("error", {}).get("code", "ok"))
    return "ok"


async def test_9_hostile_json_on_every_connect_route(chaos: Chaos) -> None:
    """Generated JSON (from the descriptors, and arbitrary), raw bytes, each as a Connect
    request to every route: never a 500, never `internal`/`unknown`, and the services live."""
    cluster = chaos.cluster
    codes: collections.Counter[str] = collections.Counter()
    for name, method in methods():
        door = ConnectHttp(cluster.service(name).http_address, timeout=10)
        await asyncio.to_thread(_connect_property(door, method, codes))
    chaos.fault(sum(codes.values()))
    assert codes["invalid_argument"] > 0, codes  # the hostility did reach the rules
    for name in SERVICES:
        assert cluster.running(name), f"{name} died"
