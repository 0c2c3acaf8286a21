"""Payment's expectations of Order and Credit (tests/contract/consumers.py), verified three
ways: against the proto/ descriptors, against the real provider servers of the mesh, and by
running Payment's own adapters (the code that reads these responses in production) against
those servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from services.common.money import Money
from services.localmesh.mesh import LocalMesh
from services.payment.adapters.dependencies import GrpcHolds, GrpcOrders
from services.payment.domain.eligibility import check_hold, check_order
from tests.contract.conftest import CONTRACT
from tests.contract.consumers import ENUM, INT64, MESSAGE, PAYMENT_EXPECTS, STRING, Expectation
from tests.contract.descriptors import Method
from tests.e2e.shop import Shop

pytestmark = pytest.mark.e2e

KINDS = {
    FieldDescriptor.TYPE_STRING: STRING,
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_ENUM: ENUM,
    FieldDescriptor.TYPE_MESSAGE: MESSAGE,
}


def method_of(expectation: Expectation) -> Method:
    for method in CONTRACT.methods:
        if method.path == expectation.method:
            return method
    raise AssertionError(f"{expectation.id}: {expectation.method} is no longer in proto/")


def resolve(message: Message, path: str) -> Any:
    value: Any = message
    for part in path.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.contract("consumer", "proto shape")
@pytest.mark.parametrize("expectation", PAYMENT_EXPECTS, ids=lambda e: e.id)
def test_the_provider_proto_has_every_field_the_consumer_reads(
    expectation: Expectation,
) -> None:
    method = method_of(expectation)
    request = CONTRACT.pool.FindMessageTypeByName(method.input_type)
    assert expectation.request_field in request.fields_by_name, expectation
    for reads in expectation.reads:
        descriptor = CONTRACT.pool.FindMessageTypeByName(method.output_type)
        *parents, leaf = reads.path.split(".")
        for part in parents:
            assert part in descriptor.fields_by_name, f"{expectation.id}: no {reads.path}"
            child = descriptor.fields_by_name[part].message_type
            assert child is not None, f"{expectation.id}: {part} is not a message"
            descriptor = child
        field = descriptor.fields_by_name.get(leaf)
        assert field is not None, f"{expectation.id}: {method.output_type} lost {reads.path}"
        assert not field.is_repeated, f"{expectation.id}: {reads.path} became repeated"
        assert KINDS.get(field.type) == reads.kind, (
            f"{expectation.id}: {reads.path} is now {field.type}, the consumer reads {reads.kind}"
        )
        if reads.kind == ENUM:
            assert field.enum_type is not None
            assert field.enum_type.full_name == reads.type_name, reads.path
            names = set(field.enum_type.values_by_name)
            missing = set(reads.values) - names
            assert not missing, f"{expectation.id}: {reads.type_name} lost {sorted(missing)}"
        if reads.kind == MESSAGE:
            assert field.message_type is not None
            assert field.message_type.full_name == reads.type_name, reads.path


@pytest.fixture(scope="module")
async def shop(mesh: LocalMesh) -> AsyncIterator[Shop]:
    channels = {name: grpc.aio.insecure_channel(s.target) for name, s in mesh.services.items()}
    try:
        yield Shop.connect(channels)
    finally:
        for channel in channels.values():
            await channel.close()


async def provider_call(
    mesh: LocalMesh, expectation: Expectation, request_id: str
) -> tuple[grpc.StatusCode, Message | None]:
    """The consumer's call, made from the descriptors of proto/ against the real provider."""
    method = method_of(expectation)
    request = CONTRACT.message_class(method.input_type)()
    setattr(request, expectation.request_field, request_id)
    response_class = CONTRACT.message_class(method.output_type)
    async with grpc.aio.insecure_channel(mesh.services[expectation.provider].target) as channel:
        stub: grpc.aio.UnaryUnaryMultiCallable[Message, Message] = channel.unary_unary(
            method.path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        try:
            return grpc.StatusCode.OK, await stub(request, timeout=20)
        except grpc.aio.AioRpcError as error:
            return error.code(), None


@pytest.mark.contract("consumer", "real provider")
@pytest.mark.parametrize("expectation", PAYMENT_EXPECTS, ids=lambda e: e.id)
async def test_the_real_provider_answers_what_the_consumer_reads(
    expectation: Expectation, shop: Shop, mesh: LocalMesh
) -> None:
    customer = shop.new_customer()
    await shop.top_up(customer, 50000)
    order = await shop.reserved_order(customer, 4200)
    known = {"order": order.order_id, "credit": order.reservation_id}[expectation.provider]

    code, response = await provider_call(mesh, expectation, known)
    assert code == grpc.StatusCode.OK, expectation.id
    assert response is not None
    for reads in expectation.reads:
        value = resolve(response, reads.path)
        if reads.kind == MESSAGE:
            parent, _, leaf = reads.path.rpartition(".")
            assert resolve(response, parent).HasField(leaf), f"{reads.path} unset"
        elif reads.kind == ENUM:
            enum = CONTRACT.pool.FindEnumTypeByName(reads.type_name)
            assert value in enum.values_by_number, f"{reads.path}={value} unknown"
        else:
            assert value, f"{expectation.id}: {reads.path} is empty in the provider's answer"
    # The values the consumer compares are the ones it expects for a reserved order.
    entity = resolve(response, expectation.reads[0].path.split(".")[0])
    assert entity.customer_id == customer
    for reads in expectation.reads:
        if reads.kind == ENUM:
            enum = CONTRACT.pool.FindEnumTypeByName(reads.type_name)
            name = enum.values_by_number[resolve(response, reads.path)].name
            assert name == reads.values[0], f"{reads.path} of a fresh hold/order is {name}"
    if expectation.provider == "order":
        assert entity.total.minor_units == 4200
        assert entity.reservation_id == order.reservation_id
    else:
        assert entity.order_id == order.order_id
        assert entity.amount.minor_units == 4200
        assert entity.expires_at.ToDatetime(tzinfo=UTC) > datetime.now(UTC)

    code, _ = await provider_call(mesh, expectation, str(uuid.uuid4()))
    assert code == grpc.StatusCode.NOT_FOUND, f"{expectation.id}: unknown id gives {code}"
    assert code in expectation.handles


@pytest.mark.contract("consumer", "consumer adapter")
async def test_payment_adapters_read_the_real_providers(shop: Shop, mesh: LocalMesh) -> None:
    """Payment's production adapters, pointed at the real Order and Credit, build the
    snapshots its rules accept; an unknown id is an answer (None), not a failure."""
    customer = shop.new_customer()
    await shop.top_up(customer, 50000)
    order = await shop.reserved_order(customer, 3100)
    async with (
        grpc.aio.insecure_channel(mesh.services["order"].target) as order_channel,
        grpc.aio.insecure_channel(mesh.services["credit"].target) as credit_channel,
    ):
        orders, holds = GrpcOrders(order_channel), GrpcHolds(credit_channel)
        snapshot = await orders.get_order(order.order_id, time_limit=20)
        hold = await holds.get_reservation(order.reservation_id, time_limit=20)
        assert snapshot is not None
        assert hold is not None
        check_order(snapshot, customer, Money("USD", 3100))  # raises if not payable
        check_hold(hold, customer, order.order_id, datetime.now(UTC))
        assert snapshot.reservation_id == hold.reservation_id
        assert await orders.get_order(str(uuid.uuid4()), time_limit=20) is None
        assert await holds.get_reservation(str(uuid.uuid4()), time_limit=20) is None
