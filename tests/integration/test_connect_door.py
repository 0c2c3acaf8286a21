"""The Connect door in-process (services/common/connect.py): the real HTTP port (uvicorn) and
the generated Connect app over a small CreditService servicer, called over real sockets by
the standard library's HTTP client. What the mesh's e2e tests cannot provoke on demand: an
unexpected exception, the caller's deadline reaching the handler, CORS for a listed origin,
the metrics of each call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from services.common.connect import CONNECT_CODES, ConnectDoor, ConnectOptions
from services.common.errors import NotFound
from services.common.http import HttpApp, HttpServer
from shop.common.v1.money_pb2 import Money
from shop.credit.v1 import credit_pb2, credit_service_pb2, credit_service_pb2_grpc
from tests.e2e.connect_http import ConnectHttp

SERVICE = "shop.credit.v1.CreditService"
GET_ACCOUNT = f"/{SERVICE}/GetCreditAccount"
ORIGIN = "https://shop.example"
BROKEN = "5f0c3b8e-1d1f-4c55-9a55-0b6f1c1e2a01"
MISSING = "a8098c1a-f86e-11da-bd1a-00112444be1e"


class Credits(credit_service_pb2_grpc.CreditServiceServicer):
    """Answers GetCreditAccount with the caller's time left (in `available`), fails with a
    NotFound or an unexpected error for two customers; the other methods are not
    implemented (the generated base class)."""

    async def GetCreditAccount(
        self, request: credit_service_pb2.GetCreditAccountRequest, context: Any
    ) -> credit_service_pb2.GetCreditAccountResponse:
        if request.customer_id == BROKEN:
            raise RuntimeError("secret connection string leaked in a message")
        if request.customer_id == MISSING:
            raise NotFound("no account", "ACCOUNT_NOT_FOUND", {"customer_id": MISSING})
        remaining = context.time_remaining()
        left_ms = -1 if remaining is None else round(remaining * 1000)
        return credit_service_pb2.GetCreditAccountResponse(
            account=credit_pb2.CreditAccount(
                customer_id=request.customer_id,
                available=Money(currency_code="USD", minor_units=left_ms),
            )
        )


@pytest.fixture
async def door() -> AsyncIterator[ConnectHttp]:
    async def serving() -> bool:
        return True

    app = HttpApp(
        serving,
        ConnectDoor(
            {SERVICE: Credits()},  # type: ignore[abstract]  # the rest: the generated base
            ConnectOptions(max_message_bytes=64 * 1024, cors_origins=frozenset({ORIGIN})),
        ),
    )
    server = HttpServer("127.0.0.1", 0, app)
    await server.start()
    try:
        yield ConnectHttp(f"127.0.0.1:{server.port}")
    finally:
        await server.stop()


def handled(code: str) -> float:
    value = REGISTRY.get_sample_value(
        "grpc_server_handled_total",
        {
            "grpc_service": SERVICE,
            "grpc_method": "GetCreditAccount",
            "grpc_code": code,
            "protocol": "connect",
        },
    )
    return value or 0.0


async def test_the_callers_deadline_reaches_the_handler(door: ConnectHttp) -> None:
    customer = "0b7e7f5e-6a43-4c8e-9d0a-3f1f2b9c7d11"
    answer = await _call(door, {"customer_id": customer}, **{"Connect-Timeout-Ms": "5000"})
    left = int(answer.json()["account"]["available"]["minor_units"])
    assert 4000 < left <= 5000, left
    without = await _call(door, {"customer_id": customer})
    assert without.json()["account"]["available"]["minor_units"] == "-1"  # no deadline


async def test_an_unexpected_error_is_internal_and_leaks_nothing(door: ConnectHttp) -> None:
    before = handled("INTERNAL")
    answer = await _call(door, {"customer_id": BROKEN})
    assert (answer.status, answer.code, answer.reason()) == (500, "internal", "INTERNAL")
    assert b"secret" not in answer.body
    assert handled("INTERNAL") == before + 1


async def test_a_domain_error_has_its_status_reason_and_metadata(door: ConnectHttp) -> None:
    before = handled("NOT_FOUND")
    answer = await _call(door, {"customer_id": MISSING})
    assert (answer.status, answer.code, answer.reason()) == (404, "not_found", "ACCOUNT_NOT_FOUND")
    info = {d["type"]: d["debug"] for d in answer.json()["details"]}["google.rpc.ErrorInfo"]
    assert info["metadata"] == {"customer_id": MISSING}
    assert handled("NOT_FOUND") == before + 1


async def test_a_declared_but_unimplemented_method_is_unimplemented(door: ConnectHttp) -> None:
    answer = await _run(
        door.call,
        f"/{SERVICE}/GetReservation",
        {"reservation_id": MISSING},
    )
    assert (answer.status, answer.code) == (501, "unimplemented"), answer.body


async def test_cors_answers_a_listed_origin_only(door: ConnectHttp) -> None:
    preflight = await _run(
        door.request,
        GET_ACCOUNT,
        b"",
        method="OPTIONS",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "connect-protocol-version" in preflight.headers["access-control-allow-headers"]
    answer = await _call(door, {"customer_id": MISSING}, Origin=ORIGIN)
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert answer.headers["access-control-expose-headers"] == "x-request-id"
    other = await _call(door, {"customer_id": MISSING}, Origin="https://evil.example")
    assert "access-control-allow-origin" not in other.headers


async def test_a_body_above_the_limit_is_refused_while_it_is_read(door: ConnectHttp) -> None:
    # Chunked: no Content-Length to refuse on; the door stops reading past the limit.
    body = b'{"customer_id": "' + b"x" * (256 * 1024) + b'"}'
    answer = await _run(
        door.request,
        GET_ACCOUNT,
        iter([body[i : i + 8192] for i in range(0, len(body), 8192)]),
        headers={"Content-Type": "application/json"},
    )
    assert (answer.status, answer.code) == (429, "resource_exhausted"), answer.body


async def test_metrics_and_healthz_share_the_port(door: ConnectHttp) -> None:
    metrics = await _run(door.request, "/metrics", b"", method="GET")
    assert metrics.status == 200
    assert b'protocol="connect"' in metrics.body
    assert (await _run(door.request, "/healthz", b"", method="GET")).status == 200


def test_every_grpc_code_has_the_connect_code_of_the_same_name() -> None:
    for status, code in CONNECT_CODES.items():
        expected = "canceled" if status is grpc.StatusCode.CANCELLED else status.name.lower()
        assert code.value == expected
    assert grpc.StatusCode.OK not in CONNECT_CODES


async def _call(door: ConnectHttp, message: dict[str, Any], **headers: str) -> Any:
    return await _run(door.request, GET_ACCOUNT, _json(message), headers=_headers(headers))


def _json(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def _headers(extra: dict[str, str]) -> dict[str, str]:
    return {"Content-Type": "application/json", **extra}


async def _run(function: Any, *args: Any, **kwargs: Any) -> Any:
    """The blocking stdlib client in a thread: the server runs on this event loop."""
    return await asyncio.to_thread(function, *args, **kwargs)
