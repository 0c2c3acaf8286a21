"""The first vertical slice through the real mesh: three processes, real NATS and
PostgreSQL, called with the real grpcurl binary (reflection) and a Python gRPC client."""

from __future__ import annotations

import json
import uuid

import grpc
import pytest

from services.localmesh.mesh import SERVICES, LocalMesh
from shop.common.v1.money_pb2 import Money
from shop.credit.v1 import credit_service_pb2 as credit
from shop.credit.v1 import credit_service_pb2_grpc
from tests.e2e.conftest import grpcurl, rich_status

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_health_reports_serving_for_every_service(mesh: LocalMesh, name: str) -> None:
    service = mesh.services[name]
    for health_name in ("", service.service_name):
        result = grpcurl(
            "-d",
            json.dumps({"service": health_name}),
            service.target,
            "grpc.health.v1.Health/Check",
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"status": "SERVING"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_reflection_lists_the_service(mesh: LocalMesh, name: str) -> None:
    service = mesh.services[name]
    result = grpcurl(service.target, "list")
    assert result.returncode == 0, result.stderr
    assert service.service_name in result.stdout.split()


def test_top_up_and_read_back_with_grpcurl(mesh: LocalMesh) -> None:
    target = mesh.services["credit"].target
    customer, request_id = str(uuid.uuid4()), str(uuid.uuid4())
    top_up = {
        "customer_id": customer,
        "amount": {"currency_code": "USD", "minor_units": 15000},
        "request_id": request_id,
    }
    first = grpcurl(target, "shop.credit.v1.CreditService/TopUpCredits", data=top_up)
    assert first.returncode == 0, first.stderr
    account = json.loads(first.stdout)["account"]
    assert account["available"] == {"currency_code": "USD", "minor_units": "15000"}

    # A retry with the same request id replays the first answer: no second top-up.
    retry = grpcurl(target, "shop.credit.v1.CreditService/TopUpCredits", data=top_up)
    assert json.loads(retry.stdout)["account"] == account

    second = grpcurl(
        target,
        "shop.credit.v1.CreditService/TopUpCredits",
        data={**top_up, "request_id": str(uuid.uuid4()), "amount": {"minor_units": 250}},
    )
    assert second.returncode == 0, second.stderr

    read = grpcurl(
        target, "shop.credit.v1.CreditService/GetCreditAccount", data={"customer_id": customer}
    )
    assert read.returncode == 0, read.stderr
    balance = json.loads(read.stdout)["account"]
    assert balance["available"]["minor_units"] == "15250"
    assert balance["topped_up"]["minor_units"] == "15250"
    assert balance["reserved"] == {"currency_code": "USD"}  # zero is omitted in JSON

    reused = grpcurl(
        target,
        "shop.credit.v1.CreditService/TopUpCredits",
        data={**top_up, "amount": {"minor_units": 1}},
    )
    assert reused.returncode != 0
    assert "AlreadyExists" in reused.stderr
    assert "IDEMPOTENCY_KEY_REUSED" in reused.stderr


def test_unknown_account_is_not_found(mesh: LocalMesh) -> None:
    result = grpcurl(
        mesh.services["credit"].target,
        "shop.credit.v1.CreditService/GetCreditAccount",
        data={"customer_id": str(uuid.uuid4())},
    )
    assert result.returncode != 0
    assert "NotFound" in result.stderr
    assert "ACCOUNT_NOT_FOUND" in result.stderr


GOOD_CUSTOMER = "6f1e0e0c-8d7e-4a4b-9c55-3f1f5b9b7a10"


@pytest.mark.parametrize(
    ("request_fields", "bad_fields"),
    [
        ({"customer_id": "not-a-uuid"}, {"customer_id"}),
        ({"amount": Money(currency_code="USD", minor_units=0)}, {"amount"}),
        ({"amount": Money(currency_code="USD", minor_units=-500)}, {"amount"}),
        ({"amount": Money(currency_code="ABC", minor_units=100)}, {"amount.currency_code"}),
        ({"amount": None}, {"amount"}),
        ({"request_id": "42"}, {"request_id"}),
        (
            {"customer_id": "x", "amount": None, "request_id": ""},
            {"customer_id", "amount", "request_id"},
        ),
    ],
)
async def test_bad_top_up_is_invalid_argument_naming_each_field_and_changes_nothing(
    credit_channel: grpc.aio.Channel, request_fields: dict[str, object], bad_fields: set[str]
) -> None:
    stub = credit_service_pb2_grpc.CreditServiceStub(credit_channel)
    customer = str(uuid.uuid4())
    fields: dict[str, object] = {
        "customer_id": customer,
        "amount": Money(currency_code="USD", minor_units=1000),
        "request_id": str(uuid.uuid4()),
        **request_fields,
    }
    request = credit.TopUpCreditsRequest(**{k: v for k, v in fields.items() if v is not None})  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as raised:
        await stub.TopUpCredits(request)
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad = rich_status(error)
    assert info is not None
    assert info.reason == "INVALID_ARGUMENT"
    assert bad is not None
    assert {v.field for v in bad.field_violations} == bad_fields

    # No state change: the customer still has no account.
    with pytest.raises(grpc.RpcError) as missing:
        await stub.GetCreditAccount(credit.GetCreditAccountRequest(customer_id=customer))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_top_up_in_another_currency_is_refused_and_changes_nothing(
    credit_channel: grpc.aio.Channel,
) -> None:
    stub = credit_service_pb2_grpc.CreditServiceStub(credit_channel)
    customer = str(uuid.uuid4())
    await stub.TopUpCredits(
        credit.TopUpCreditsRequest(
            customer_id=customer,
            amount=Money(currency_code="EUR", minor_units=700),
            request_id=str(uuid.uuid4()),
        )
    )
    with pytest.raises(grpc.RpcError) as raised:
        await stub.TopUpCredits(
            credit.TopUpCreditsRequest(
                customer_id=customer, amount=Money(minor_units=100), request_id=str(uuid.uuid4())
            )
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = rich_status(raised.value)
    assert info is not None
    assert info.reason == "CURRENCY_MISMATCH"
    account = (
        await stub.GetCreditAccount(credit.GetCreditAccountRequest(customer_id=customer))
    ).account
    assert (account.available.currency_code, account.available.minor_units) == ("EUR", 700)
