"""TLS and mutual TLS on the HTTP port (the Connect door), with the gRPC settings' very
certificates, and the same authorization rules on the verified identity: a real uvicorn
server and the standard library's HTTPS client over real sockets, throwaway certificates.

With client certificates required on gRPC, the HTTP port asks for one but lets a caller
without it finish the handshake: probes and Prometheus read /healthz and /metrics with the
server's TLS alone, while every Connect call is decided by the rules (an unverified caller
is refused, PERMISSION_DENIED / CALLER_NOT_AUTHORIZED, before its body is read)."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.common.connect import ConnectDoor, ConnectOptions
from services.common.http import HttpApp, HttpServer
from services.common.security_settings import AuthzPolicy, GrpcTls
from shop.credit.v1 import credit_pb2, credit_service_pb2, credit_service_pb2_grpc
from tests.e2e.connect_http import Answer
from tests.security.certs import Issued, Pki

SERVICE = "shop.credit.v1.CreditService"
GET_ACCOUNT = f"/{SERVICE}/GetCreditAccount"
CUSTOMER = "a8098c1a-f86e-11da-bd1a-00112444be1e"


class Credits(credit_service_pb2_grpc.CreditServiceServicer):
    async def GetCreditAccount(
        self, request: credit_service_pb2.GetCreditAccountRequest, context: Any
    ) -> credit_service_pb2.GetCreditAccountResponse:
        return credit_service_pb2.GetCreditAccountResponse(
            account=credit_pb2.CreditAccount(customer_id=request.customer_id)
        )


@pytest.fixture
async def https_port(pki: Pki) -> AsyncIterator[int]:
    tls = GrpcTls(str(pki.credit.cert), str(pki.credit.key), str(pki.ca.cert), True)
    policy, problems = AuthzPolicy.parse(f"{GET_ACCOUNT}=client")
    assert not problems

    async def serving() -> bool:
        return True

    door = ConnectDoor({SERVICE: Credits()}, ConnectOptions(authz=policy))  # type: ignore[abstract]
    server = HttpServer("127.0.0.1", 0, HttpApp(serving, door), tls=tls)
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop()


def https(pki: Pki, port: int, client: Issued | None, path: str, body: bytes = b"") -> Answer:
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        if path.startswith("/shop."):
            connection.request("POST", path, body, {"Content-Type": "application/json"})
        else:
            connection.request("GET", path)
        response = connection.getresponse()
        return Answer(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()


async def call(pki: Pki, port: int, client: Issued | None) -> Answer:
    body = json.dumps({"customer_id": CUSTOMER}).encode()
    return await asyncio.to_thread(https, pki, port, client, GET_ACCOUNT, body)


async def test_the_allowed_identity_is_served(pki: Pki, https_port: int) -> None:
    answer = await call(pki, https_port, pki.client)
    assert answer.status == 200, answer.body
    assert answer.json()["account"]["customer_id"] == CUSTOMER


@pytest.mark.parametrize("who", ["outsider", "payment", None])
async def test_a_verified_identity_no_rule_allows_and_no_identity_are_refused(
    pki: Pki, https_port: int, who: str | None
) -> None:
    client = getattr(pki, who) if who else None
    before = refused_count()
    answer = await call(pki, https_port, client)
    assert (answer.status, answer.code) == (403, "permission_denied"), answer.body
    assert answer.reason() == "CALLER_NOT_AUTHORIZED"
    assert answer.headers["x-request-id"]  # a refusal is a call like any: its id, its count
    assert refused_count() == before + 1


def refused_count() -> float:
    labels = {
        "grpc_service": SERVICE,
        "grpc_method": "GetCreditAccount",
        "grpc_code": "PERMISSION_DENIED",
        "protocol": "connect",
    }
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


async def test_a_certificate_from_another_ca_fails_the_handshake(pki: Pki, https_port: int) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await call(pki, https_port, pki.stranger)


async def test_probes_reach_healthz_and_metrics_without_a_client_certificate(
    pki: Pki, https_port: int
) -> None:
    for path in ("/healthz", "/metrics"):
        answer = await asyncio.to_thread(https, pki, https_port, None, path)
        assert answer.status == 200, path


async def test_plaintext_http_is_not_served_on_a_tls_port(https_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", https_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert b"200" not in answer.split(b"\r\n", 1)[0]
