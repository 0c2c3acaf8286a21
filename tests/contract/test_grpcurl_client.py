"""An outside client with no generated code: the real `grpcurl` binary drives the whole saga
through server reflection, JSON in and out (proto3 JSON mapping: int64 as strings, enums by
name; grpcurl prints the proto field names), and sees the documented error codes."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from services.localmesh.mesh import LocalMesh
from tests.contract.conftest import CONTRACT
from tests.e2e.conftest import grpcurl

pytestmark = pytest.mark.e2e

# grpcurl exits with 64 + the gRPC status code when the call fails.
GRPCURL_RPC_ERROR = 64
INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION = 3, 5, 6, 9


def targets(mesh: LocalMesh) -> dict[str, str]:
    return {name: service.target for name, service in mesh.services.items()}


def ok(target: str, method: str, data: dict[str, Any]) -> dict[str, Any]:
    result = grpcurl(target, method, data=data)
    assert result.returncode == 0, (method, data, result.stderr)
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def refused(target: str, method: str, data: dict[str, Any], code: int, name: str) -> str:
    result = grpcurl(target, method, data=data)
    assert result.returncode == GRPCURL_RPC_ERROR + code, (method, data, result)
    assert f"Code: {name}" in result.stderr, result.stderr
    return result.stderr


def poll_order(target: str, order_id: str, status: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        order: dict[str, Any] = ok(
            target, "shop.order.v1.OrderService/GetOrder", {"order_id": order_id}
        )["order"]
        if order["status"] == status:
            return order
        assert time.monotonic() < deadline, f"order never {status}: {order}"
        time.sleep(0.2)


def test_grpcurl_lists_and_describes_every_service_and_method(mesh: LocalMesh) -> None:
    listed: set[str] = set()
    for target in targets(mesh).values():
        result = grpcurl(target, "list")
        assert result.returncode == 0, result.stderr
        listed |= set(result.stdout.split())
    assert set(CONTRACT.services) <= listed, sorted(set(CONTRACT.services) - listed)
    assert "grpc.health.v1.Health" in listed

    for service in CONTRACT.services:
        target = next(t for t in targets(mesh).values() if service in grpcurl(t, "list").stdout)
        described = grpcurl(target, "describe", service)
        assert described.returncode == 0, described.stderr
        for method in (m for m in CONTRACT.methods if m.service == service):
            stream = "stream " if method.server_streaming else ""
            line = (
                f"rpc {method.name} ( .{method.input_type} ) "
                f"returns ( {stream}.{method.output_type} );"
            )
            assert line in described.stdout, (line, described.stdout)
            message = grpcurl(target, "describe", method.input_type)
            assert message.returncode == 0, message.stderr
            assert f"message {method.input_type.rsplit('.', 1)[-1]} {{" in message.stdout


def test_grpcurl_drives_the_saga_with_json(mesh: LocalMesh) -> None:
    t = targets(mesh)
    customer = str(uuid.uuid4())
    usd = {"currency_code": "USD", "minor_units": 2500}

    top_up = {"customer_id": customer, "amount": {**usd, "minor_units": 10000}}
    top_up["request_id"] = str(uuid.uuid4())
    account = ok(t["credit"], "shop.credit.v1.CreditService/TopUpCredits", top_up)["account"]
    assert account["available"] == {"currency_code": "USD", "minor_units": "10000"}

    order = ok(
        t["order"],
        "shop.order.v1.OrderService/CreateOrder",
        {
            "customer_id": customer,
            "items": [{"sku": "SKU-GRPCURL", "quantity": 1, "unit_price": usd}],
            "request_id": str(uuid.uuid4()),
        },
    )["order"]
    assert order["status"] == "ORDER_STATUS_PENDING"
    reserved = poll_order(t["order"], order["order_id"], "ORDER_STATUS_RESERVED")

    paid = ok(
        t["payment"],
        "shop.payment.v1.PaymentService/ProcessPayment",
        {
            "order_id": order["order_id"],
            "customer_id": customer,
            "reservation_id": reserved["reservation_id"],
            "amount": usd,
            "payment_method": "PAYMENT_METHOD_DEBIT_CARD",
            "request_id": str(uuid.uuid4()),
        },
    )
    assert paid["success"] is True
    payment = paid["payment"]
    assert payment["status"] == "PAYMENT_STATUS_SUCCEEDED"
    assert payment["transaction_id"].startswith("txn_")
    poll_order(t["order"], order["order_id"], "ORDER_STATUS_PAID")

    read = ok(
        t["payment"],
        "shop.payment.v1.PaymentService/GetPayment",
        {"payment_id": payment["payment_id"]},
    )["payment"]
    assert read["amount"] == {"currency_code": "USD", "minor_units": "2500"}

    refund_request = {
        "payment_id": payment["payment_id"],
        "amount": {**usd, "minor_units": 9999},
        "reason": "too much",
        "request_id": str(uuid.uuid4()),
    }
    refused(
        t["payment"],
        "shop.payment.v1.PaymentService/RefundPayment",
        refund_request,
        FAILED_PRECONDITION,
        "FailedPrecondition",
    )
    refund_request |= {"amount": usd, "request_id": str(uuid.uuid4())}
    refunded = ok(t["payment"], "shop.payment.v1.PaymentService/RefundPayment", refund_request)
    assert refunded["payment"]["status"] == "PAYMENT_STATUS_REFUNDED"
    poll_order(t["order"], order["order_id"], "ORDER_STATUS_REFUNDED")

    # The same request id with another request: ALREADY_EXISTS, nothing happens.
    refused(
        t["credit"],
        "shop.credit.v1.CreditService/TopUpCredits",
        {**top_up, "amount": usd},
        ALREADY_EXISTS,
        "AlreadyExists",
    )


def test_grpcurl_sees_the_error_codes_and_details(mesh: LocalMesh) -> None:
    t = targets(mesh)
    stderr = refused(
        t["order"],
        "shop.order.v1.OrderService/CreateOrder",
        {},
        INVALID_ARGUMENT,
        "InvalidArgument",
    )
    assert "google.rpc.BadRequest" in stderr
    for field in ("customer_id", "items", "request_id"):
        assert field in stderr
    refused(
        t["order"],
        "shop.order.v1.OrderService/GetOrder",
        {"order_id": str(uuid.uuid4())},
        NOT_FOUND,
        "NotFound",
    )
    refused(
        t["payment"],
        "shop.payment.v1.PaymentService/GetPayment",
        {"payment_id": "not-a-uuid"},
        INVALID_ARGUMENT,
        "InvalidArgument",
    )
    stderr = refused(
        t["payment"],
        "shop.payment.v1.PaymentService/ProcessPayment",
        {
            "order_id": str(uuid.uuid4()),
            "customer_id": str(uuid.uuid4()),
            "amount": {"currency_code": "USD", "minor_units": 100},
            "request_id": str(uuid.uuid4()),
        },
        NOT_FOUND,
        "NotFound",
    )
    assert "ORDER_NOT_FOUND" in stderr


def json_stream(text: str) -> list[dict[str, Any]]:
    """The JSON documents grpcurl prints one after another for a server stream."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        document, at = decoder.raw_decode(text, at)
        found.append(document)
    return found


def test_grpcurl_watches_an_order_until_it_can_change_no_more(mesh: LocalMesh) -> None:
    t = targets(mesh)
    usd = {"currency_code": "USD", "minor_units": 2500}
    order = ok(
        t["order"],
        "shop.order.v1.OrderService/CreateOrder",
        {
            "customer_id": str(uuid.uuid4()),  # no account: Credit rejects the order
            "items": [{"sku": "SKU-GRPCURL", "quantity": 1, "unit_price": usd}],
            "request_id": str(uuid.uuid4()),
        },
    )["order"]
    watched = grpcurl(
        "-max-time",
        "20",
        t["order"],
        "shop.order.v1.OrderService/WatchOrder",
        data={"order_id": order["order_id"]},
    )
    assert watched.returncode == 0, watched.stderr  # REJECTED is final: the stream ends OK
    statuses = [answer["order"]["status"] for answer in json_stream(watched.stdout)]
    assert statuses in (
        ["ORDER_STATUS_PENDING", "ORDER_STATUS_REJECTED"],
        ["ORDER_STATUS_REJECTED"],
    ), statuses
    refused(
        t["order"],
        "shop.order.v1.OrderService/WatchOrder",
        {"order_id": str(uuid.uuid4())},
        NOT_FOUND,
        "NotFound",
    )
