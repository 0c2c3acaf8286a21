"""The production pods' exec health probe (services/common/probe.py), run as the kubelet runs
it: a separate process, with the service's TLS files in its environment, against a real
gRPC server under mutual TLS and the production overlay's authorization policy."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest

from services.common.grpc_server import GrpcServer, create_server
from services.common.security import AuthorizationInterceptor, server_credentials
from services.common.security_settings import AuthzPolicy, GrpcTls
from tests.deploy.manifests import render
from tests.security.certs import Pki

SERVICE = "shop.order.v1.OrderService"


def production_rules(service: str) -> str:
    deployment = render("production").get("Deployment", service)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (rules,) = [e["value"] for e in container["env"] if e["name"] == "GRPC_AUTHZ_RULES"]
    return str(rules)


@pytest.fixture
async def order_server(pki: Pki) -> AsyncIterator[GrpcServer]:
    tls = GrpcTls(str(pki.order.cert), str(pki.order.key), str(pki.ca.cert), True)
    policy, problems = AuthzPolicy.parse(production_rules("order"))
    assert not problems
    server = await create_server(
        "127.0.0.1:0",
        [],
        [SERVICE],
        credentials=server_credentials(tls),
        interceptors=[AuthorizationInterceptor(policy)],
    )
    await server.set_serving(True)
    yield server
    await server.stop(0)


async def probe(pki: Pki, port: int, server_name: str, **env: str) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_TLS_")}
    environ.update(
        GRPC_TLS_CERT=str(pki.order.cert),
        GRPC_TLS_KEY=str(pki.order.key),
        GRPC_TLS_CA=str(pki.ca.cert),
        GRPC_TLS_CLIENT_AUTH="require",
    )
    environ.update(env)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.common.probe",
        str(port),
        SERVICE,
        server_name,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_the_probe_passes_over_mutual_tls_when_serving(
    pki: Pki, order_server: GrpcServer
) -> None:
    code, stderr = await probe(pki, order_server.port, "order")
    assert code == 0, stderr


async def test_the_probe_fails_when_not_serving(pki: Pki, order_server: GrpcServer) -> None:
    await order_server.set_serving(False)
    code, stderr = await probe(pki, order_server.port, "order")
    assert code == 1
    assert "NOT_SERVING" in stderr


async def test_the_probe_verifies_the_servers_name(pki: Pki, order_server: GrpcServer) -> None:
    code, stderr = await probe(pki, order_server.port, "payment")  # not on order's certificate
    assert code == 1
    assert "UNAVAILABLE" in stderr


async def test_the_probe_needs_the_certificate_of_a_verified_caller(
    pki: Pki, order_server: GrpcServer
) -> None:
    code, _ = await probe(
        pki,
        order_server.port,
        "order",
        GRPC_TLS_CERT=str(pki.stranger.cert),
        GRPC_TLS_KEY=str(pki.stranger.key),
    )
    assert code == 1


async def test_a_plaintext_probe_cannot_check_a_tls_server(
    pki: Pki, order_server: GrpcServer
) -> None:
    """Why production needs this probe: the native grpc probe speaks plaintext."""
    code, _ = await probe(
        pki,
        order_server.port,
        "order",
        GRPC_TLS_CERT="",
        GRPC_TLS_KEY="",
        GRPC_TLS_CA="",
        GRPC_TLS_CLIENT_AUTH="none",
    )
    assert code == 1
