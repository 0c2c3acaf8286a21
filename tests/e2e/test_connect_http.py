"""The HTTP/JSON door (DESIGN §9) end to end: the seed story over Connect only, from the
standard library's HTTP client (as curl would), against the three services as separate
processes; then what the door refuses, and how its errors read.

The same request over both doors is one request: a `request_id` spent over gRPC replays its
answer over Connect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from connectrpc.errors import ConnectError

from services.localmesh.mesh import LocalMesh
from shop.credit.v1 import credit_service_pb2
from shop.payment.v1 import payment_service_pb2
from shop.payment.v1.payment_service_connect import PaymentServiceClient
from tests.conftest import Infra
from tests.e2e.connect_http import ConnectHttp
from tests.e2e.shop import Shop, events_of, eventually, usd
from tests.ids import new_id

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ORDERS = "/shop.order.v1.OrderService/"
CREDITS = "/shop.credit.v1.CreditService/"
PAYMENTS = "/shop.payment.v1.PaymentService/"


@pytest.fixture(scope="module")
def doors(mesh: LocalMesh) -> dict[str, ConnectHttp]:
    return {name: ConnectHttp(process.http_address) for name, process in mesh.services.items()}


@pytest.fixture
async def shop(mesh: LocalMesh) -> AsyncIterator[Shop]:
    channels = {name: grpc.aio.insecure_channel(s.target) for name, s in mesh.services.items()}
    client = Shop.connect(channels)
    try:
        yield client
        await client.check_books()  # the money adds up, whichever door moved it
    finally:
        for channel in channels.values():
            await channel.close()


def money(minor_units: int) -> dict[str, object]:
    return {"currency_code": "USD", "minor_units": str(minor_units)}


async def test_the_seed_story_over_http_and_json_only(
    doors: dict[str, ConnectHttp], shop: Shop, infra: Infra
) -> None:
    order_door, credit_door, payment_door = doors["order"], doors["credit"], doors["payment"]
    customer = new_id()
    shop.customers.add(customer)

    topped = credit_door.ok(
        CREDITS + "TopUpCredits",
        {"customer_id": customer, "amount": money(20000), "request_id": new_id()},
    )
    assert topped["account"]["available"]["minor_units"] == "20000"

    created = order_door.ok(
        ORDERS + "CreateOrder",
        {
            "customer_id": customer,
            "items": [{"sku": "book", "quantity": 1, "unit_price": money(15000)}],
            "request_id": new_id(),
        },
    )
    order_id = created["order"]["order_id"]
    assert created["order"]["status"] == "ORDER_STATUS_PENDING"

    # Wait for RESERVED as a browser would: the order's stream, cut at 3 s (Connect-Timeout-Ms).
    messages, end = order_door.stream(
        ORDERS + "WatchOrder", {"order_id": order_id}, timeout_ms=3000
    )
    statuses = [m["order"]["status"] for m in messages]
    assert statuses[-1] == "ORDER_STATUS_RESERVED", statuses
    assert end.get("error", {}).get("code", "deadline_exceeded") == "deadline_exceeded", end
    reserved = messages[-1]["order"]

    paid = payment_door.ok(
        PAYMENTS + "ProcessPayment",
        {
            "order_id": order_id,
            "customer_id": customer,
            "reservation_id": reserved["reservation_id"],
            "amount": money(15000),
            "payment_method": "PAYMENT_METHOD_CREDIT_CARD",
            "request_id": new_id(),
        },
    )
    assert paid["success"] is True, paid
    payment_id = paid["payment"]["payment_id"]

    refunded = payment_door.ok(
        PAYMENTS + "RefundPayment",
        {
            "payment_id": payment_id,
            "amount": money(5000),
            "reason": "one page torn",
            "request_id": new_id(),
        },
    )
    assert refunded["refund"]["amount"]["minor_units"] == "5000"

    def available() -> str:
        account = credit_door.ok(CREDITS + "GetCreditAccount", {"customer_id": customer})
        return str(account["account"]["available"]["minor_units"])

    async def read_available() -> str:
        return available()

    # 20000 - 15000 paid + 5000 refunded (asynchronously: payments.refunded → Credit).
    assert await eventually(read_available, lambda value: value == "10000") == "10000"
    # A second order, cancelled while RESERVED: its hold is released, the credits come back.
    second = order_door.ok(
        ORDERS + "CreateOrder",
        {
            "customer_id": customer,
            "items": [{"sku": "lamp", "quantity": 1, "unit_price": money(4000)}],
            "request_id": new_id(),
        },
    )["order"]
    messages, _ = order_door.stream(
        ORDERS + "WatchOrder", {"order_id": second["order_id"]}, timeout_ms=3000
    )
    assert messages[-1]["order"]["status"] == "ORDER_STATUS_RESERVED", messages
    cancelled = order_door.ok(
        ORDERS + "CancelOrder", {"order_id": second["order_id"], "reason": "changed my mind"}
    )
    assert cancelled["order"]["status"] == "ORDER_STATUS_CANCELLED"
    released = await eventually(
        lambda: shop.account(customer), lambda account: account.reserved.minor_units == 0
    )
    assert released.available.minor_units == 10000  # the hold of 4000 is released

    # The same events as a gRPC saga: the door changed how the calls came in, nothing else.
    found = await eventually(
        lambda: events_of(infra.nats_url, customer),
        lambda found: {"credits.captured", "credits.refunded", "credits.released"} <= set(found),
    )
    assert {"credits.topped_up", "credits.reserved", "payments.succeeded"} <= set(found)


def test_watch_order_streams_until_the_order_can_change_no_more(
    doors: dict[str, ConnectHttp],
) -> None:
    order_door = doors["order"]
    created = order_door.ok(
        ORDERS + "CreateOrder",
        {
            "customer_id": new_id(),  # no account: the order is REJECTED
            "items": [{"sku": "pen", "quantity": 1, "unit_price": money(100)}],
            "request_id": new_id(),
        },
    )
    messages, end = order_door.stream(
        ORDERS + "WatchOrder", {"order_id": created["order"]["order_id"]}
    )
    assert [m["order"]["status"] for m in messages][-1] == "ORDER_STATUS_REJECTED", messages
    assert end == {}, end  # the stream ended cleanly, without an error


async def test_a_request_id_spent_over_grpc_replays_its_answer_over_connect(
    doors: dict[str, ConnectHttp], shop: Shop
) -> None:
    customer = shop.new_customer()
    request_id = new_id()
    over_grpc = await shop.credit.TopUpCredits(
        credit_service_pb2.TopUpCreditsRequest(
            customer_id=customer, amount=usd(700), request_id=request_id
        )
    )
    replayed = doors["credit"].ok(
        CREDITS + "TopUpCredits",
        {"customer_id": customer, "amount": money(700), "request_id": request_id},
    )
    assert replayed["account"]["available"]["minor_units"] == str(
        over_grpc.account.available.minor_units
    )
    assert (await shop.account(customer)).available.minor_units == 700  # applied once


def test_json_answers_with_the_proto_names_and_reads_either_spelling(
    doors: dict[str, ConnectHttp],
) -> None:
    order_id = new_id()
    snake = doors["order"].call(ORDERS + "GetOrder", {"order_id": order_id})
    camel = doors["order"].call(ORDERS + "GetOrder", {"orderId": order_id})
    assert (snake.status, camel.status) == (404, 404)  # both read: the order is not there
    created = doors["order"].ok(
        ORDERS + "CreateOrder",
        {
            "customerId": new_id(),
            "items": [{"sku": "cup", "quantity": 1, "unitPrice": money(250)}],
            "requestId": new_id(),
        },
    )
    assert set(created["order"]) >= {"order_id", "customer_id", "items", "total", "status"}
    assert created["order"]["items"][0]["unit_price"]["minor_units"] == "250"


def test_the_request_id_header_is_echoed_or_given(doors: dict[str, ConnectHttp]) -> None:
    mine = new_id()
    answer = doors["order"].call(ORDERS + "GetOrder", {"order_id": new_id()}, x_request_id=mine)
    assert answer.headers["x-request-id"] == mine
    given = doors["order"].call(ORDERS + "GetOrder", {"order_id": new_id()})
    assert len(given.headers["x-request-id"]) == 36


def test_errors_carry_the_connect_code_the_http_status_and_the_grpc_details(
    doors: dict[str, ConnectHttp],
) -> None:
    missing = doors["order"].call(ORDERS + "GetOrder", {"order_id": new_id()})
    assert (missing.status, missing.code, missing.reason()) == (404, "not_found", "ORDER_NOT_FOUND")

    invalid = doors["payment"].call(PAYMENTS + "GetPayment", {"payment_id": "not-a-uuid"})
    assert (invalid.status, invalid.code) == (400, "invalid_argument")
    debug = {d["type"]: d.get("debug") for d in invalid.json()["details"]}
    assert debug["google.rpc.BadRequest"]["fieldViolations"][0]["field"] == "payment_id"
    assert "uuid" in invalid.violations()["payment_id"].lower()

    empty = doors["credit"].call(CREDITS + "TopUpCredits", {})
    assert (empty.status, empty.code) == (400, "invalid_argument")
    assert set(empty.violations()) == {"customer_id", "amount", "request_id"}


def test_what_the_door_refuses_before_any_handler(
    doors: dict[str, ConnectHttp], mesh: LocalMesh
) -> None:
    door = doors["payment"]
    typo = door.call(PAYMENTS + "GetPayment", {"payment_id": new_id(), "paymnetId": "x"})
    assert (typo.status, typo.code) == (400, "invalid_argument"), typo.body

    wrong_type = door.call(PAYMENTS + "ListPayments", {"order_id": new_id(), "page_size": "ten"})
    assert (wrong_type.status, wrong_type.code) == (400, "invalid_argument"), wrong_type.body

    garbage = door.request(
        PAYMENTS + "GetPayment", b"{not json", headers={"Content-Type": "application/json"}
    )
    assert (garbage.status, garbage.code) == (400, "invalid_argument"), garbage.body

    unknown = door.call(PAYMENTS + "Frobnicate", {})
    assert unknown.status == 404
    other_service = door.call(ORDERS + "GetOrder", {"order_id": new_id()})
    assert other_service.status == 404  # Order's routes are on Order's port only

    got = door.request(PAYMENTS + "GetPayment", b"", method="GET")
    assert (got.status, got.headers.get("allow")) == (405, "POST")

    text = door.request(PAYMENTS + "GetPayment", b"hi", headers={"Content-Type": "text/plain"})
    assert text.status == 415

    grpc_over_http1 = door.request(
        PAYMENTS + "GetPayment", b"", headers={"Content-Type": "application/grpc"}
    )
    assert grpc_over_http1.status == 415

    limit = 4 * 1024 * 1024  # GRPC_MAX_MESSAGE_BYTES, the mesh's default
    big = json.dumps({"payment_id": new_id(), "padding": "x" * limit}).encode()
    too_big = door.request(
        PAYMENTS + "GetPayment", big, headers={"Content-Type": "application/json"}
    )
    assert (too_big.status, too_big.code) == (429, "resource_exhausted"), too_big.body[:200]

    preflight = door.request(
        PAYMENTS + "ProcessPayment",
        b"",
        method="OPTIONS",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers  # no origin is allowed


@pytest.fixture
async def payment_client(mesh: LocalMesh) -> AsyncIterator[PaymentServiceClient]:
    async with PaymentServiceClient(f"http://{mesh.services['payment'].http_address}") as client:
        yield client


async def test_the_generated_connect_client_speaks_binary_protobuf(
    payment_client: PaymentServiceClient,
) -> None:
    with pytest.raises(ConnectError) as refused:
        await payment_client.get_payment(payment_service_pb2.GetPaymentRequest(payment_id=new_id()))
    assert refused.value.code.value == "not_found"
    listed = await payment_client.list_payments(
        payment_service_pb2.ListPaymentsRequest(order_id=new_id())
    )
    assert list(listed.payments) == []


def test_make_demo_http_runs_the_seed_story_against_the_mesh(mesh: LocalMesh) -> None:
    env = {
        **os.environ,
        **{f"{name.upper()}_HTTP": s.http_address for name, s in mesh.services.items()},
        "MESH_DATA_DIR": "/nonexistent",  # the addresses above, not a `make run` mesh's
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo_http.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "curl -sS -H 'Content-Type: application/json'" in out
    for seen in ("REJECTED (ACCOUNT_NOT_FOUND)", "ORDER_STATUS_RESERVED", "ORDER_STATUS_PAID"):
        assert seen in out, seen
    assert "HTTP 400" in out
    assert '"field": "customer_id"' in out
    assert out.rstrip().endswith("The seed story ran end to end over HTTP and JSON.")
