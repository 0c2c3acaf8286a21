"""TLS and mutual TLS on the shared server factory, and the authorization interceptor on the
verified peer identity: real servers and clients over real sockets, throwaway certificates."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.grpc_server import GrpcServer, create_server
from services.common.security import (
    AuthorizationInterceptor,
    channel_credentials,
    server_credentials,
)
from services.common.security_settings import AuthzPolicy, GrpcTls
from tests.e2e.conftest import rich_status
from tests.security.certs import Issued, Pki

SERVICE = "shop.test.v1.TestService"
CHECK = "/grpc.health.v1.Health/Check"
POLICY = f"{CHECK}=payment,client;/grpc.health.v1.Health/*=client"


def tls_of(pki: Pki, issued: Issued, *, require: bool = True) -> GrpcTls:
    return GrpcTls(str(issued.cert), str(issued.key), str(pki.ca.cert), require)


async def start(pki: Pki, *, require: bool, policy: str | None) -> GrpcServer:
    tls = tls_of(pki, pki.order, require=require)
    interceptors = []
    if policy is not None:
        parsed, problems = AuthzPolicy.parse(policy)
        assert not problems
        interceptors.append(AuthorizationInterceptor(parsed))
    server = await create_server(
        "127.0.0.1:0",
        [],
        [SERVICE],
        credentials=server_credentials(tls),
        interceptors=interceptors,
    )
    await server.set_serving(True)
    return server


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[GrpcServer]:
    server = await start(pki, require=True, policy=POLICY)
    yield server
    await server.stop(0)


def client_channel(
    pki: Pki, port: int, client: Issued | None, *, ca: bytes | None = None
) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca or pki.ca.cert_pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


async def check(channel: grpc.aio.Channel, service: str = SERVICE) -> str:
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=10
    )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


async def test_a_valid_client_certificate_is_served(pki: Pki, mtls_server: GrpcServer) -> None:
    async with client_channel(pki, mtls_server.port, pki.payment) as channel:
        assert await check(channel) == "SERVING"


async def test_the_services_own_channel_credentials_work(pki: Pki, mtls_server: GrpcServer) -> None:
    """What Payment uses for its calls to Order and Credit (channel_credentials)."""
    credentials = channel_credentials(tls_of(pki, pki.payment))
    assert credentials is not None
    async with grpc.aio.secure_channel(f"localhost:{mtls_server.port}", credentials) as channel:
        assert await check(channel) == "SERVING"


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate", "plaintext"])
async def test_a_client_without_a_valid_certificate_is_refused(
    pki: Pki, mtls_server: GrpcServer, who: str
) -> None:
    if who == "plaintext":
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{mtls_server.port}")
    elif who == "no certificate":
        channel = client_channel(pki, mtls_server.port, None)
    else:  # trusts our server, but presents a certificate our CA did not sign
        channel = client_channel(pki, mtls_server.port, pki.stranger)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=10
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_refuses_a_server_its_ca_did_not_sign(
    pki: Pki, mtls_server: GrpcServer
) -> None:
    async with client_channel(
        pki, mtls_server.port, pki.payment, ca=pki.other_ca.cert_pem
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await check(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_an_identity_not_allowed_gets_permission_denied(
    pki: Pki, mtls_server: GrpcServer
) -> None:
    async with client_channel(pki, mtls_server.port, pki.outsider) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await check(channel)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info, _ = rich_status(denied.value)
    assert info is not None
    assert info.reason == "CALLER_NOT_AUTHORIZED"
    assert info.metadata["method"] == CHECK
    assert info.metadata["caller"] == "outsider"
    assert dict(denied.value.trailing_metadata() or ())["x-request-id"]  # to quote in a report


async def test_streams_are_authorized_too(pki: Pki, mtls_server: GrpcServer) -> None:
    """Health/Watch is a server stream: payment is allowed Check only, client everything."""
    request = health_pb2.HealthCheckRequest(service=SERVICE)
    async with client_channel(pki, mtls_server.port, pki.payment) as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(request, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            async for _ in call:
                pass
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info, _ = rich_status(denied.value)
    assert info is not None
    assert info.reason == "CALLER_NOT_AUTHORIZED"
    async with client_channel(pki, mtls_server.port, pki.client) as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(request, timeout=10)
        first = await call.read()
        assert isinstance(first, health_pb2.HealthCheckResponse)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        call.cancel()


async def test_server_only_tls_needs_no_client_certificate(pki: Pki) -> None:
    server = await start(pki, require=False, policy=None)
    try:
        async with client_channel(pki, server.port, None) as channel:
            assert await check(channel) == "SERVING"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await check(channel)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)
